//! `cargo xtask compose --check`: catches a broken deploy/ in CI, where no Docker engine runs: the compose file
//! (our own structural check always, docker-compose's `config` when installed), the Prometheus config and alert
//! rules (promtool, installed when missing and we are root), the Grafana provisioning and dashboard JSON, and that
//! every dashboard and alert query names a metric bucket-api really exports (the `dashboards` test of bucket-api,
//! run against this deploy/ directory).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::{apt, paths, process};

/// The services DESIGN §4 puts in the stack; the compose file must declare each.
const REQUIRED_SERVICES: [&str; 5] = ["bucket-api", "postgres", "redis", "prometheus", "grafana"];

/// Conditions `depends_on` accepts.
const CONDITIONS: [&str; 3] = ["service_started", "service_healthy", "service_completed_successfully"];

/// Environment variables whose value must come from deploy/.env, never be written into the compose file.
const SECRET_MARKERS: [&str; 3] = ["PASSWORD", "TOKEN", "SECRET"];

enum Outcome {
    Passed(String),
    Skipped(String),
    Failed(String),
}

/// Checks the repository's deploy/ directory.
pub fn run() -> Result<()> {
    run_in(&paths::in_workspace("deploy"))
}

/// Runs every check on `deploy` (a deploy/ directory or a copy of it), prints one line per check, and fails if any
/// check failed.
pub fn run_in(deploy: &Path) -> Result<()> {
    let compose_file = deploy.join("docker-compose.yml");
    let prometheus = deploy.join("prometheus");
    let promtool_found = ensure_promtool();
    let checks: Vec<(&str, Outcome)> = vec![
        ("compose structure", compose_structure(&compose_file)),
        ("compose config", compose_config(&compose_file)),
        ("prometheus config", promtool(&promtool_found, &["check", "config"], &[prometheus.join("prometheus.yml")])),
        ("prometheus rules", promtool(&promtool_found, &["check", "rules"], &[prometheus.join("alerts.yml")])),
        ("grafana json", grafana_json(&deploy.join("grafana"))),
        ("dashboard metrics", dashboard_metrics(deploy)),
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
        bail!("{} is not valid ({}): see the lines above", deploy.display(), failed.join(", "));
    }
    Ok(())
}

/// Our own check of what the stack relies on, with no tool installed: the file parses as YAML, every required
/// service is there with a health check, `depends_on` names declared services with a known condition, named
/// volumes are declared, bind-mounted paths exist, and no password or token is written into the file.
fn compose_structure(file: &Path) -> Outcome {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => return Outcome::Failed(format!("cannot read {}: {error}", file.display())),
    };
    let root = match yaml(&text) {
        Ok(root) => root,
        Err(error) => return Outcome::Failed(format!("{}: {error:#}", file.display())),
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let problems = compose_problems(&root, dir);
    if problems.is_empty() {
        let services: Vec<&str> = entries(root.get("services")).map(|(name, _)| name.as_str()).collect();
        Outcome::Passed(format!("declares {}, all with health checks", services.join(", ")))
    } else {
        Outcome::Failed(problems.join("; "))
    }
}

/// Parses YAML (duplicate keys are an error) into a JSON-like tree; the error names the line.
fn yaml(text: &str) -> Result<Value> {
    Ok(serde_saphyr::from_str(text)?)
}

/// The entries of a mapping; none for anything else.
fn entries(node: Option<&Value>) -> impl Iterator<Item = (&String, &Value)> {
    node.and_then(Value::as_object).into_iter().flatten()
}

fn compose_problems(root: &Value, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(services) = root.get("services") else {
        return vec!["no top-level `services:`".to_string()];
    };
    let declared: Vec<&str> = entries(Some(services)).map(|(name, _)| name.as_str()).collect();
    for required in REQUIRED_SERVICES {
        if !declared.contains(&required) {
            problems.push(format!("no service `{required}`"));
        }
    }
    let volumes: Vec<&str> = entries(root.get("volumes")).map(|(name, _)| name.as_str()).collect();
    for (name, service) in entries(Some(services)) {
        if service.get("image").is_none() && service.get("build").is_none() {
            problems.push(format!("service `{name}` has neither `image` nor `build`"));
        }
        match service.get("healthcheck").and_then(|h| h.get("test")) {
            Some(_) => {}
            None => problems.push(format!("service `{name}` has no `healthcheck.test`")),
        }
        match service.get("depends_on") {
            None => {}
            Some(Value::Object(dependencies)) => {
                for (dependency, spec) in dependencies {
                    if !declared.contains(&dependency.as_str()) {
                        problems.push(format!("`{name}` depends on undeclared service `{dependency}`"));
                    }
                    match spec.get("condition").and_then(Value::as_str) {
                        Some(condition) if CONDITIONS.contains(&condition) => {}
                        other => problems.push(format!(
                            "`{name}` depends on `{dependency}` with condition `{}`; use one of {}",
                            other.unwrap_or("(none)"),
                            CONDITIONS.join(", ")
                        )),
                    }
                }
            }
            Some(_) => problems.push(format!("`{name}`: write `depends_on` as a mapping with conditions")),
        }
        if let Some(Value::Array(mounts)) = service.get("volumes") {
            for mount in mounts.iter().filter_map(Value::as_str) {
                let source = mount.split(':').next().unwrap_or("");
                if source.starts_with('.') || source.starts_with('/') {
                    if !dir.join(source).exists() {
                        problems.push(format!("`{name}` mounts {source}, which does not exist"));
                    }
                } else if !volumes.contains(&source) {
                    problems.push(format!("`{name}` uses volume `{source}`, not declared under top-level `volumes:`"));
                }
            }
        }
        for (variable, value) in entries(service.get("environment")) {
            let secret = SECRET_MARKERS.iter().any(|marker| variable.contains(marker));
            let literal = match value {
                Value::String(text) => !text.is_empty() && !text.starts_with("${"),
                other => !other.is_null(),
            };
            if secret && literal {
                problems.push(format!("`{name}` writes {variable} into the file: take it from deploy/.env"));
            }
        }
    }
    problems
}

/// `config -q` of docker-compose (v1) or the `docker compose` plugin, which need no engine. Variables come from
/// deploy/.env, or from deploy/.env.example where there is no .env (as in CI).
fn compose_config(file: &Path) -> Outcome {
    let mut command = if let Ok(v1) = which::which("docker-compose") {
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
    which::which("docker").is_ok()
        && process::capture(Command::new("docker").args(["compose", "version"]).stdout(Stdio::null()))
            .map(|output| output.status.success())
            .unwrap_or(false)
}

/// promtool, installed with Debian's `prometheus` package when missing and we are root; else why it is missing.
fn ensure_promtool() -> std::result::Result<PathBuf, String> {
    if let Ok(found) = which::which("promtool") {
        return Ok(found);
    }
    if bucket_testkit::process::is_root() {
        if let Err(error) = apt::install("promtool", &["prometheus"]) {
            return Err(format!("{error:#}"));
        }
    }
    which::which("promtool")
        .ok()
        .ok_or_else(|| "promtool not installed (apt-get install --no-install-recommends prometheus)".to_string())
}

fn promtool(found: &std::result::Result<PathBuf, String>, args: &[&str], files: &[PathBuf]) -> Outcome {
    let promtool = match found {
        Ok(promtool) => promtool,
        Err(why) => return Outcome::Skipped(why.clone()),
    };
    let mut command = Command::new(promtool);
    command.args(args).args(files);
    match process::run_checked(&mut command) {
        Ok(_) => Outcome::Passed(format!("`{}`", process::display(&command))),
        Err(error) => Outcome::Failed(format!("{error:#}")),
    }
}

/// The provisioning YAML parses and names a data source, and every dashboard parses, has a uid, a title and panels,
/// and queries only provisioned data sources (a dashboard pointing at a missing uid shows "datasource not found").
fn grafana_json(dir: &Path) -> Outcome {
    let datasources = dir.join("provisioning/datasources/prometheus.yml");
    let uids: Vec<String> =
        match std::fs::read_to_string(&datasources).map_err(anyhow::Error::from).and_then(|t| yaml(&t)) {
            Ok(root) => match root.get("datasources") {
                Some(Value::Array(items)) => {
                    items.iter().filter_map(|d| d.get("uid")?.as_str().map(str::to_string)).collect()
                }
                _ => Vec::new(),
            },
            Err(error) => return Outcome::Failed(format!("{}: {error:#}", datasources.display())),
        };
    if uids.is_empty() {
        return Outcome::Failed(format!("{} provisions no data source with a uid", datasources.display()));
    }
    let providers = dir.join("provisioning/dashboards");
    for file in files_with_extensions(&providers, &["yml", "yaml"]) {
        let parsed = std::fs::read_to_string(&file).map_err(anyhow::Error::from).and_then(|t| yaml(&t));
        if let Err(error) = parsed {
            return Outcome::Failed(format!("{}: {error:#}", file.display()));
        }
    }
    let files = files_with_extensions(&dir.join("dashboards"), &["json"]);
    if files.is_empty() {
        return Outcome::Failed(format!("no dashboard JSON under {}", dir.join("dashboards").display()));
    }
    let mut panels = 0;
    for file in &files {
        let parsed = std::fs::read_to_string(file)
            .map_err(|error| error.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|error| error.to_string()));
        let dashboard = match parsed {
            Ok(dashboard) => dashboard,
            Err(error) => return Outcome::Failed(format!("{}: {error}", file.display())),
        };
        for key in ["uid", "title"] {
            if dashboard[key].as_str().is_none_or(str::is_empty) {
                return Outcome::Failed(format!("{}: no `{key}`", file.display()));
            }
        }
        let Some(list) = dashboard["panels"].as_array().filter(|list| !list.is_empty()) else {
            return Outcome::Failed(format!("{}: no panels", file.display()));
        };
        panels += list.len();
        let mut used = Vec::new();
        datasource_uids(&dashboard, &mut used);
        if let Some(unknown) = used.iter().find(|uid| !uids.contains(uid)) {
            return Outcome::Failed(format!(
                "{}: queries data source `{unknown}`, but only {uids:?} are provisioned",
                file.display()
            ));
        }
    }
    Outcome::Passed(format!("{} dashboard(s), {panels} panels, data sources {uids:?}", files.len()))
}

/// Every `datasource.uid` in a dashboard, except Grafana's built-ins and variables.
fn datasource_uids(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(uid) = map.get("datasource").and_then(|d| d["uid"].as_str()) {
                if !uid.starts_with('$') && !uid.starts_with("-- ") && !out.iter().any(|u| u == uid) {
                    out.push(uid.to_string());
                }
            }
            map.values().for_each(|child| datasource_uids(child, out));
        }
        Value::Array(items) => items.iter().for_each(|item| datasource_uids(item, out)),
        _ => {}
    }
}

/// Runs bucket-api's `dashboards` test against `deploy`: it extracts the metric names of every dashboard and alert
/// query and looks each up in the `/metrics` of a real app after traffic. One source of truth, the same in
/// `cargo test` and here.
fn dashboard_metrics(deploy: &Path) -> Outcome {
    let mut command = process::cargo();
    command
        .args(["test", "-q", "-p", "bucket-api", "--test", "dashboards", "--", "--nocapture", "--test-threads", "1"])
        .current_dir(paths::workspace_root())
        .env("BUCKET_DEPLOY_DIR", deploy)
        // The assertion message is the useful part; a backtrace would bury it.
        .env("RUST_BACKTRACE", "0");
    let output = match process::capture(&mut command) {
        Ok(output) => output,
        Err(error) => return Outcome::Failed(format!("{error:#}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        let summary = stdout.lines().find_map(|line| line.split_once("dashboard metrics: ").map(|(_, rest)| rest));
        return Outcome::Passed(summary.unwrap_or("every query names an exported metric").to_string());
    }
    // The assertion message lists each unknown metric with its file and query: show those lines when they are
    // there, else the end of the output (a compile error, a missing file).
    let stderr = String::from_utf8_lossy(&output.stderr);
    let unknown: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains("does not export") || l.starts_with("  `"))
        .collect();
    if !unknown.is_empty() {
        return Outcome::Failed(unknown.join("\n    "));
    }
    let tail: Vec<&str> = stdout.lines().chain(stderr.lines()).filter(|line| !line.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(25)..].join("\n    ");
    Outcome::Failed(format!("`{}` failed:\n    {tail}", process::display(&command)))
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

    fn problems(yaml: &str) -> Vec<String> {
        compose_problems(&super::yaml(yaml).unwrap(), &paths::in_workspace("deploy"))
    }

    #[test]
    fn the_repository_compose_file_has_no_problem() {
        let text = std::fs::read_to_string(paths::in_workspace("deploy/docker-compose.yml")).unwrap();
        assert_eq!(compose_problems(&yaml(&text).unwrap(), &paths::in_workspace("deploy")), Vec::<String>::new());
    }

    #[test]
    fn yaml_that_a_real_parser_refuses_is_refused() {
        for bad in ["a: 1\na: 2\n", "a:\n\t- b\n", "a: [1, 2\n", "a: \"open\n"] {
            assert!(yaml(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn missing_services_bad_dependencies_volumes_and_secrets_are_reported() {
        let yaml = "services:\n  bucket-api:\n    image: x\n    environment:\n      ADMIN_TOKEN: hunter2\n\
                    \x20   depends_on:\n      db:\n        condition: healthy\n    volumes:\n      - data:/d\n\
                    \x20     - ./nowhere:/n\n";
        assert_eq!(
            problems(yaml),
            [
                "no service `postgres`",
                "no service `redis`",
                "no service `prometheus`",
                "no service `grafana`",
                "service `bucket-api` has no `healthcheck.test`",
                "`bucket-api` depends on undeclared service `db`",
                "`bucket-api` depends on `db` with condition `healthy`; use one of service_started, \
                 service_healthy, service_completed_successfully",
                "`bucket-api` uses volume `data`, not declared under top-level `volumes:`",
                "`bucket-api` mounts ./nowhere, which does not exist",
                "`bucket-api` writes ADMIN_TOKEN into the file: take it from deploy/.env",
            ]
        );
    }
}
