//! stub
use crate::config::Balance;
/// stub
pub trait Candidate { /// w
 fn weight(&self) -> u32; /// u
 fn usable(&self) -> bool; /// i
 fn in_flight(&self) -> u64; }
/// stub
#[derive(Debug)]
pub struct Selector { next: std::sync::atomic::AtomicUsize }
impl Selector {
 /// stub
 pub fn new(_b: Balance, _s: &[(u32, bool)]) -> Self { Self { next: Default::default() } }
 /// stub
 pub fn select<C: Candidate>(&self, servers: &[C]) -> Option<usize> {
   let n = servers.len(); let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
   (0..n).map(|k| (start + k) % n).find(|&i| servers[i].usable()) }
}
