//! `cargo xtask compose --check`: catches a broken deploy/ (compose file, Prometheus config and rules, Grafana JSON)
//! in CI, where no Docker engine runs. Each check uses the real tool when it is installed and says so when it is
//! skipped; a few structural checks of our own always run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Result};

use crate::{paths, process};

/// The services DESIGN §4 puts in the stack; the compose file must declare each.
const REQUIRED_SERVICES: [&str; 5] = ["bucket-api", "postgres", "redis", "prometheus", "grafana"];

enum Outcome {
    Passed(String),
    Skipped(String),
    Failed(String),
}

/// Runs every check, prints one line per check, and fails if any check failed.
pub fn run() -> Result<()> {
    let deploy = paths::in_workspace("deploy");
    let compose_file = deploy.join("docker-compose.yml");
    let checks: Vec<(&str, Outcome)> = vec![
        ("compose services", compose_structure(&compose_file)),
        ("compose config", compose_config(&compose_file)),
        ("prometheus config", promtool(&["check", "config"], &[deploy.join("prometheus/prometheus.yml")])),
        ("prometheus rules", prometheus_rules(&deploy.join("prometheus/rules"))),
        ("grafana json", grafana_json(&deploy.join("grafana"))),
    ];
    let mut failed = Vec::new();
    for (name, outcome) in checks {
        match outcome {
            Outcome::Passed(detail) => println!("  ok       {name}: {detail}"),
            Outcome::Skipped(detail) => println!("  skipped  {name}: {detail}"),
            Outcome::Failed(detail) => {
                println!("  FAILED   {name}: {detail}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("deploy/ is not valid ({}): see the lines above", failed.join(", "));
    }
    Ok(())
}

/// Our own minimal YAML check: indentation by spaces only, and every required service declared under `services:`.
fn compose_structure(file: &Path) -> Outcome {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => return Outcome::Failed(format!("cannot read {}: {error}", file.display())),
    };
    if let Some(number) = text.lines().position(|line| line.trim_start_matches(' ').starts_with('\t')) {
        return Outcome::Failed(format!("line {} is indented with a tab, which YAML forbids", number + 1));
    }
    let services = declared_services(&text);
    let missing: Vec<&str> = REQUIRED_SERVICES.into_iter().filter(|name| !services.iter().any(|s| s == name)).collect();
    if missing.is_empty() {
        Outcome::Passed(format!("declares {}", services.join(", ")))
    } else {
        Outcome::Failed(format!("no service {} under `services:`", missing.join(", ")))
    }
}

/// The keys one indentation level below the top-level `services:` key.
fn declared_services(text: &str) -> Vec<String> {
    let mut services = Vec::new();
    let mut inside = false;
    let mut indent = None;
    for line in text.lines() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let depth = line.len() - content.len();
        if depth == 0 {
            inside = content.trim_end() == "services:";
            continue;
        }
        if !inside || *indent.get_or_insert(depth) != depth {
            continue;
        }
        if let Some(name) = content.trim_end().strip_suffix(':') {
            services.push(name.trim_matches(['"', '\'']).to_string());
        }
    }
    services
}

/// `config -q` of docker-compose (v1) or the `docker compose` plugin, which need no engine. Variables come from
/// deploy/.env, or from deploy/.env.example where there is no .env (as in CI).
fn compose_config(file: &Path) -> Outcome {
    let mut command = if let Some(v1) = process::find_program("docker-compose") {
        Command::new(v1)
    } else if docker_compose_plugin() {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        return Outcome::Skipped(
            "docker-compose not installed (apt-get install --no-install-recommends docker-compose)".into(),
        );
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let env_file = if dir.join(".env").exists() { dir.join(".env") } else { dir.join(".env.example") };
    command.arg("--env-file").arg(&env_file).arg("-f").arg(file).args(["config", "-q"]);
    match process::run_checked(&mut command) {
        Ok(_) => Outcome::Passed(format!("`{}` accepts it", process::display(&command))),
        Err(error) => Outcome::Failed(format!("{error:#}")),
    }
}

fn docker_compose_plugin() -> bool {
    process::find_program("docker").is_some()
        && process::capture(Command::new("docker").args(["compose", "version"]).stdout(Stdio::null()))
            .map(|output| output.status.success())
            .unwrap_or(false)
}

fn promtool(args: &[&str], files: &[PathBuf]) -> Outcome {
    let Some(promtool) = process::find_program("promtool") else {
        return Outcome::Skipped("promtool not installed (apt-get install --no-install-recommends prometheus)".into());
    };
    let mut command = Command::new(promtool);
    command.args(args).args(files);
    match process::run_checked(&mut command) {
        Ok(_) => Outcome::Passed(format!("`{}`", process::display(&command))),
        Err(error) => Outcome::Failed(format!("{error:#}")),
    }
}

fn prometheus_rules(dir: &Path) -> Outcome {
    let rules = files_with_extensions(dir, &["yml", "yaml"]);
    if rules.is_empty() {
        return Outcome::Passed(format!("no rule files in {} yet", dir.display()));
    }
    promtool(&["check", "rules"], &rules)
}

fn grafana_json(dir: &Path) -> Outcome {
    let files = files_with_extensions(dir, &["json"]);
    if files.is_empty() {
        return Outcome::Passed(format!("no JSON files under {} yet", dir.display()));
    }
    for file in &files {
        let parsed = std::fs::read_to_string(file)
            .map_err(|error| error.to_string())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|error| error.to_string()));
        if let Err(error) = parsed {
            return Outcome::Failed(format!("{}: {error}", file.display()));
        }
    }
    Outcome::Passed(format!("{} file(s) parse", files.len()))
}

/// Files under `dir` (recursively) whose extension is one of `extensions`, sorted; none when `dir` is missing.
fn files_with_extensions(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| extensions.contains(&ext)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_the_keys_one_level_below_services() {
        let yaml = "services:\n  api:\n    image: x\n    ports:\n      - 1:1\n  # comment\n  db:\n    image: y\n\
                    volumes:\n  data:\n";
        assert_eq!(declared_services(yaml), ["api", "db"]);
    }
}
