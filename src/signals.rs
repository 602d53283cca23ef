//! Unix signals turned into [`Control`] values.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::daemon::Control;

/// Spawns a task that sends `Reload` on SIGHUP, `Shutdown` on SIGTERM/SIGINT
/// and `ReopenLogs` on SIGUSR1.
pub fn forward(tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    tokio::spawn(async move {
        loop {
            let control = tokio::select! {
                Some(()) = hup.recv() => Control::Reload,
                Some(()) = term.recv() => Control::Shutdown,
                Some(()) = int.recv() => Control::Shutdown,
                Some(()) = usr1.recv() => Control::ReopenLogs,
                else => return,
            };
            if tx.send(control).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}
