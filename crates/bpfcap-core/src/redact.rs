//! Secret redaction in command lines: values that look like passwords, tokens
//! or keys are replaced by `[REDACTED]` before an event leaves the core.
//!
//! Recognised: `--password=…`, `DB_PASSWORD=…` and the like (also inside a
//! `sh -c` script), a secret-named flag's next argument (`--token abc`),
//! HTTP credentials (`Authorization: …`, `Bearer …`), passwords in URLs
//! (`https://user:pw@host`), private key blocks, and the token formats of
//! common services (GitHub, GitLab, AWS, OpenAI/Anthropic, Slack, Google,
//! Stripe, npm, Hugging Face) and JWTs wherever they appear.

use std::sync::LazyLock;

use regex::{Captures, Regex};

pub const MARK: &str = "[REDACTED]";

/// Name parts that make a key secret (`api-key`, `GITHUB_TOKEN`, `db.password`);
/// whole components only, so `--max-tokens` and `--author` stay.
const KEYWORDS: &str = r"pass|passwd|password|passphrase|pwd|secret|secrets|token|apikey|api[_-]?key|access[_-]?key|auth|credential|credentials|private[_-]?key|client[_-]?secret|session[_-]?key|cookie";

fn secret_name() -> String {
    format!(r"(?:[a-z0-9]+[_.-])*(?:{KEYWORDS})(?:[_.-][a-z0-9]+)*")
}

/// `KEY=value` where KEY names a secret; at the start of an argument or after
/// a shell separator. The value runs to the next unquoted separator.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r#"(?i)(^|[\s;&|(`'"])(-{{0,2}}{}=)("[^"]*"|'[^']*'|[^\s;&|)`'"]+)"#, secret_name()))
        .expect("valid regex")
});

/// A flag naming a secret whose value is the next argument.
static SECRET_FLAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"(?i)^--?{}$", secret_name())).expect("valid regex"));

/// HTTP credential headers and schemes.
static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-auth-token|cookie)(\s*:\s*)(.+)$")
        .expect("valid regex")
});
static SCHEME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}").expect("valid regex"));

/// The password of `scheme://user:password@host`.
static URL_PASSWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)").expect("valid regex"));

/// Token formats that are secret by their shape alone.
static TOKENS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}",
        r"|(?:AKIA|ASIA)[0-9A-Z]{16}|sk-[A-Za-z0-9_-]{20,}|(?:sk|rk)_live_[0-9A-Za-z]{16,}",
        r"|xox[abposr]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|npm_[A-Za-z0-9]{36}|hf_[A-Za-z]{30,}",
        r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
        r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*"
    ))
    .expect("valid regex")
});

/// Redacts one argument; returns whether anything changed.
pub fn redact_arg(arg: &mut String) -> bool {
    let mut out = std::borrow::Cow::Borrowed(arg.as_str());
    let mut replace = |re: &Regex, f: &dyn Fn(&Captures) -> String| {
        if re.is_match(&out) {
            out = std::borrow::Cow::Owned(re.replace_all(&out, |c: &Captures| f(c)).into_owned());
        }
    };
    replace(&ASSIGNMENT, &|c| format!("{}{}{MARK}", &c[1], &c[2]));
    replace(&HEADER, &|c| format!("{}{}{MARK}", &c[1], &c[2]));
    replace(&SCHEME, &|c| format!("{}{}{MARK}", &c[1], &c[2]));
    replace(&URL_PASSWORD, &|c| format!("{}{MARK}{}", &c[1], &c[3]));
    replace(&TOKENS, &|_| MARK.to_owned());
    match out {
        std::borrow::Cow::Borrowed(_) => false,
        std::borrow::Cow::Owned(s) => {
            *arg = s;
            true
        }
    }
}

/// Redacts a command line in place; returns how many arguments changed.
pub fn redact_argv(argv: &mut [String]) -> usize {
    let mut changed = 0;
    let mut next_is_secret = false;
    for arg in argv.iter_mut() {
        if next_is_secret && !arg.starts_with('-') {
            *arg = MARK.to_owned();
            changed += 1;
            next_is_secret = false;
            continue;
        }
        next_is_secret = SECRET_FLAG.is_match(arg);
        changed += usize::from(redact_arg(arg));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redacted(argv: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        redact_argv(&mut v);
        v
    }

    #[test]
    fn assignments_and_flags() {
        assert_eq!(redacted(&["mysql", "--password=hunter2", "db"]), ["mysql", "--password=[REDACTED]", "db"]);
        assert_eq!(redacted(&["env", "GITHUB_TOKEN=abc123", "gh"]), ["env", "GITHUB_TOKEN=[REDACTED]", "gh"]);
        assert_eq!(redacted(&["x", "--api-key", "k-123", "--verbose"]), ["x", "--api-key", "[REDACTED]", "--verbose"]);
        assert_eq!(redacted(&["x", "--db.password=p"]), ["x", "--db.password=[REDACTED]"]);
        assert_eq!(
            redacted(&["sh", "-c", "OPENAI_API_KEY='a b' python run.py --token=xyz; echo ok"]),
            ["sh", "-c", "OPENAI_API_KEY=[REDACTED] python run.py --token=[REDACTED]; echo ok"]
        );
    }

    #[test]
    fn ordinary_arguments_stay() {
        let argv = ["llm", "--max-tokens=100", "--author=me", "--tokens", "5", "pass.txt", "ls", "-l", "PATH=/bin"];
        assert_eq!(redacted(&argv), argv);
        assert_eq!(redacted(&["x", "--password"]), ["x", "--password"]); // nothing follows
    }

    #[test]
    fn http_credentials_and_urls() {
        assert_eq!(
            redacted(&["curl", "-H", "Authorization: Bearer abc.def.ghi", "https://u:pw@example.com/x"]),
            ["curl", "-H", "Authorization: [REDACTED]", "https://u:[REDACTED]@example.com/x"]
        );
        assert_eq!(redacted(&["x", "using bearer 0123456789abcdef"]), ["x", "using bearer [REDACTED]"]);
        assert_eq!(
            redacted(&["git", "clone", "https://example.com/r.git"]),
            ["git", "clone", "https://example.com/r.git"]
        );
    }

    #[test]
    fn token_shapes_anywhere() {
        for secret in [
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghij",
            "AKIAIOSFODNN7EXAMPLE",
            "sk-ant-api03-abcdefghijklmnopqrstuvwxyz",
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
            "xoxb-123456789012-abcdefghij",
            "AIzaSyA-0123456789abcdefghijklmnopqrstu",
            "glpat-abcdefghij0123456789",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ] {
            assert_eq!(redacted(&["x", &format!("key {secret} end")]), ["x", "key [REDACTED] end"], "{secret}");
        }
        assert_eq!(redacted(&["x", "-----BEGIN RSA PRIVATE KEY-----\nMIIE..."]), ["x", "[REDACTED]"]);
    }
}
