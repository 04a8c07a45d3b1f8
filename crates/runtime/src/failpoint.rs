//! Named crash points for tests: `DP_FAILPOINTS="name=action,name=action"` in a service's
//! environment makes [`hit`] act when execution reaches `name`. Actions: `pause` (log and
//! wait forever, so a test can SIGKILL the process at exactly that point) and `abort` (die at
//! once, like a SIGKILL). Unset (the normal case), a failpoint costs one environment lookup
//! per process.

use std::sync::OnceLock;

/// What a reached failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Abort,
}

/// Parses `name=action,...`; unknown actions are ignored with a warning.
pub fn parse(spec: &str) -> Vec<(String, Action)> {
    spec.split(',')
        .filter_map(|item| {
            let (name, action) = item.trim().split_once('=')?;
            let action = match action.trim() {
                "pause" => Action::Pause,
                "abort" => Action::Abort,
                other => {
                    tracing::warn!(
                        failpoint = name,
                        action = other,
                        "unknown failpoint action ignored"
                    );
                    return None;
                }
            };
            Some((name.trim().to_owned(), action))
        })
        .collect()
}

fn configured() -> &'static [(String, Action)] {
    static POINTS: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var("DP_FAILPOINTS")
            .map(|s| parse(&s))
            .unwrap_or_default()
    })
}

/// Acts if failpoint `name` is configured; returns at once otherwise.
pub async fn hit(name: &str) {
    let Some((_, action)) = configured().iter().find(|(n, _)| n == name) else {
        return;
    };
    match action {
        Action::Pause => {
            tracing::warn!("failpoint {name} reached: pausing until killed");
            std::future::pending::<()>().await;
        }
        Action::Abort => {
            tracing::warn!("failpoint {name} reached: aborting");
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_actions_are_ignored() {
        assert_eq!(
            parse("a=pause, b = abort,c=explode,nonsense"),
            vec![
                ("a".to_owned(), Action::Pause),
                ("b".to_owned(), Action::Abort)
            ]
        );
        assert!(parse("").is_empty());
    }
}
