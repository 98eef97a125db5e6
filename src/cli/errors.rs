//! How the binary reports failure: one line on stderr, whatever went wrong.

use std::process::ExitCode;

/// Collapses a message onto one line (some causes, such as parser errors, span several).
pub fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints `error: ` and the whole cause chain of `e`, joined with `: `, on one line.
pub fn report(e: &anyhow::Error) {
    eprintln!("error: {}", one_line(&format!("{e:#}")));
}

/// Handles a command-line parsing failure: `--help` and `--version` print as usual and exit
/// 0; a mistake prints clap's first paragraph (what is wrong) and a pointer to `--help`.
pub fn report_usage(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    // clap's message is the first paragraph (what is wrong, and e.g. the missing arguments);
    // usage and tips follow after a blank line.
    let rendered = e.render().to_string();
    let what: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let what = what.join(" ");
    let what = what.strip_prefix("error:").unwrap_or(&what).trim();
    eprintln!("error: {} (see `wgattn --help`)", one_line(what));
    ExitCode::from(e.exit_code().clamp(1, 255) as u8)
}

/// A panic is a bug in wgattn; it still ends with one `error:` line and no backtrace.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error, please report it: {}{at}",
            one_line(&message)
        );
    }));
}
