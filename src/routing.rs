//! stub
use crate::config::HostPattern;
/// stub
pub struct Router<T> { routes: Vec<(Option<HostPattern>, String, T)> }
impl<T> Router<T> {
 /// stub
 pub fn new(routes: Vec<(Option<HostPattern>, String, T)>) -> Self { Self { routes } }
 /// stub
 pub fn route(&self, _host: Option<&str>, path: &str) -> Option<&T> { self.routes.iter().filter(|r| path.starts_with(&r.1)).max_by_key(|r| r.1.len()).map(|r| &r.2) }
}
