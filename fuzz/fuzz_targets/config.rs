//! The config parser on arbitrary input: it never panics, and every error
//! names a line of the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = weir::config::parse(text, Path::new("weir.toml")) {
        let last_line = text.matches('\n').count() + 1;
        for one in error.each() {
            assert!((1..=last_line).contains(&one.line), "{one}");
            assert!(!one.message.is_empty(), "{one}");
        }
    }
});
