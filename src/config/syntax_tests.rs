//! TOML syntax and type errors, one test per class: each names the line and
//! the key the mistake is on, never a neighbour.

use super::error_tests::fails;

/// A `[server]` section whose lines after `listen` are `rest`: `rest` starts on line 3.
fn server(rest: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:8080\"\n{rest}\n")
}

#[test]
fn a_duplicate_key_names_the_duplicated_key() {
    // The second `threads` is on line 5; the key just before it is `idle_timeout`.
    fails(
        &server("threads = 1\nidle_timeout = \"1s\"\nthreads = 2"),
        5,
        "server.threads",
        "duplicate key",
    );
    // Quoted the first time, bare the second: the same key.
    fails(
        &server("\"threads\" = 1\nmax_connections = 5\nthreads = 2"),
        5,
        "server.threads",
        "duplicate key",
    );
    fails(
        "[server]\nlisten = { addr = \"127.0.0.1:1\", tls = [], addr = \"x\" }\n",
        2,
        "server.listen.addr",
        "duplicate key",
    );
    let upstreams = "[[upstream]]\nname = \"a\"\nservers = []\n\
                     [[upstream]]\nname = \"b\"\nservers = []\nname = \"c\"\n";
    fails(upstreams, 7, "upstream[1].name", "duplicate key");
}

#[test]
fn a_table_defined_twice_names_the_table() {
    fails(
        &server("threads = 1\n[log]\nlevel = \"info\"\n[server]"),
        6,
        "server",
        "duplicate key",
    );
    fails(
        &server("[[upstream]]\nname = \"a\"\n[upstream]"),
        5,
        "upstream",
        "duplicate key",
    );
}

#[test]
fn a_value_of_the_wrong_type_names_its_key() {
    fails(
        &server("idle_timeout = \"1s\"\nthreads = \"2\""),
        4,
        "server.threads",
        "invalid type: string",
    );
    fails(
        &server("threads = 1.5"),
        3,
        "server.threads",
        "invalid type: floating point",
    );
    fails("[server]\nlisten = 5\n", 2, "server.listen", "invalid type");
    fails("server = 5\n", 1, "server", "expected a table");
    let hc = "[[upstream]]\nname = \"a\"\nservers = []\nhealth_check = [\"/healthz\"]\n";
    fails(hc, 4, "upstream[0].health_check", "expected a table");
}

#[test]
fn an_unterminated_string_names_the_key_it_was_for() {
    // A basic string ends at the line's end; the next line is not swallowed.
    fails(
        &server("access = 1\nidle_timeout = \"1s\nthreads = 2"),
        4,
        "server.idle_timeout",
        "invalid basic string",
    );
    fails(
        &server("idle_timeout = '1s"),
        3,
        "server.idle_timeout",
        "invalid literal string",
    );
    // A multi-line string runs to the end of the file.
    fails(
        &server("idle_timeout = \"\"\"1s\nthreads = 2"),
        5,
        "server.idle_timeout",
        "invalid multi-line basic string",
    );
}

#[test]
fn a_bad_table_header_is_reported_on_its_line() {
    fails(&server("threads = 1\n[log"), 4, "log", "unclosed table");
    // A header the parse cannot keep names no key, rather than the one before it.
    fails(
        &server("[[upstream]\nname = \"a\""),
        3,
        "",
        "unclosed array table",
    );
    // One broken inside names what was read of it.
    fails(&server("[ser ver]"), 3, "ser", "unclosed table");
    fails(
        &server("threads = 1\n[log]]\nlevel = \"info\""),
        4,
        "log",
        "expected newline",
    );
    // The wrong kind of header: an array where one table is meant, and the reverse.
    fails(
        "[[server]]\nlisten = \"127.0.0.1:1\"\n",
        1,
        "server[0]",
        "invalid type: sequence, expected a table",
    );
    fails(
        &server("[upstream]\nname = \"a\""),
        3,
        "upstream",
        "invalid type: map, expected a sequence",
    );
    let hc = "[[upstream]]\nname = \"a\"\nservers = []\n[[upstream.health_check]]\npath = \"/\"\n";
    fails(hc, 4, "upstream[0].health_check[0]", "expected a table");
}
