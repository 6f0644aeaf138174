//! `capstan plugin new|build|inspect`: start a plugin project from a template, build it into a
//! component, and show what a component is (world, imports, exports, size).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The `capstan:plugin` WIT package, embedded so Python and JavaScript builds need no checkout.
const WIT: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("admission.wit", include_str!("../../../wit/admission.wit")),
    ("scheduler.wit", include_str!("../../../wit/scheduler.wit")),
    ("controller.wit", include_str!("../../../wit/controller.wit")),
    ("worlds.wit", include_str!("../../../wit/worlds.wit")),
];

/// The Rust SDK of the source tree this binary was built from.
const SDK_RUST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/rust");

/// The JavaScript SDK of the source tree this binary was built from (`sdk/js/build` installs
/// componentize-js there).
const SDK_JS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/js");

/// `capstan plugin …`.
#[derive(clap::Subcommand)]
pub enum PluginCommand {
    /// Creates a plugin project from a template.
    New {
        /// The world the plugin implements.
        #[arg(long, value_enum)]
        kind: Kind,
        /// The language of the project.
        #[arg(long, value_enum)]
        lang: Lang,
        /// The project's name and directory.
        name: String,
    },
    /// Builds the plugin project in DIR into `<DIR>/<name>.wasm` (or `--out`).
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Shows a component's world, imports, exports and size.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
}

/// A plugin world.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// `admission-policy`.
    Admission,
    /// `scheduler-plugin`.
    Scheduler,
    /// `controller`.
    Controller,
}

/// A plugin language.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// Rust with `capstan-plugin-sdk`.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

/// Runs one `capstan plugin` command.
pub fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New { kind, lang, name } => new(kind, lang, &name),
        PluginCommand::Build { dir, out } => build(&dir, out),
        PluginCommand::Inspect { file } => inspect(&file),
    }
}

fn new(kind: Kind, lang: Lang, name: &str) -> anyhow::Result<()> {
    let dir = PathBuf::from(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let files: Vec<(&str, String)> = match lang {
        Lang::Rust => vec![
            ("Cargo.toml", RUST_CARGO.replace("NAME", name).replace("SDK", SDK_RUST)),
            ("src/lib.rs", kind.template(lang).to_string()),
        ],
        Lang::Python => vec![("app.py", kind.template(lang).to_string())],
        Lang::Js => vec![(kind.js_entry(), kind.template(lang).to_string())],
    };
    for (file, text) in files.into_iter().chain([("plugin.yaml", kind.manifest().replace("NAME", name))]) {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "created {name}/; build it with `capstan plugin build {name}`, then `kubectl apply -f {name}/plugin.yaml`"
    );
    Ok(())
}

impl Kind {
    /// The source a new project of this kind starts from: a small plugin that works as it is.
    fn template(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Kind::Admission, Lang::Rust) => RUST_LIB,
            (Kind::Admission, Lang::Python) => PYTHON_APP,
            (Kind::Admission, Lang::Js) => JS_POLICY,
            (Kind::Scheduler, Lang::Rust) => RUST_SCHEDULER,
            (Kind::Scheduler, Lang::Python) => PYTHON_SCHEDULER,
            (Kind::Scheduler, Lang::Js) => JS_SCHEDULER,
            (Kind::Controller, Lang::Rust) => RUST_CONTROLLER,
            (Kind::Controller, Lang::Python) => PYTHON_CONTROLLER,
            (Kind::Controller, Lang::Js) => JS_CONTROLLER,
        }
    }

    /// The JavaScript project's source file (`policy.js` for admission, as it always was).
    fn js_entry(self) -> &'static str {
        match self {
            Kind::Admission => "policy.js",
            Kind::Scheduler | Kind::Controller => "plugin.js",
        }
    }

    /// The Plugin manifest of a new project (`NAME` stands for the project's name).
    fn manifest(self) -> &'static str {
        match self {
            Kind::Admission => PLUGIN_YAML,
            Kind::Scheduler => SCHEDULER_YAML,
            Kind::Controller => CONTROLLER_YAML,
        }
    }
}

/// The WIT world a Python or JavaScript project implements, from `spec.kind` in its
/// `plugin.yaml` (admission when it has none: projects from before the other kinds existed).
fn project_world(dir: &Path) -> anyhow::Result<&'static str> {
    let manifest = dir.join("plugin.yaml");
    let Ok(text) = std::fs::read_to_string(&manifest) else { return Ok("admission-policy") };
    let kind = text.lines().find_map(|line| line.strip_prefix("  kind:")).map(str::trim);
    match kind {
        Some("admission") | None => Ok("admission-policy"),
        Some("scheduler") => Ok("scheduler-plugin"),
        Some("controller") => Ok("controller"),
        Some(other) => bail!("{}: spec.kind {other:?} is not admission, scheduler or controller", manifest.display()),
    }
}

fn project_name(dir: &Path) -> String {
    std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "plugin".to_string())
}

fn build(dir: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let name = project_name(dir);
    let out = out.unwrap_or_else(|| dir.join(format!("{name}.wasm")));
    let out = std::path::absolute(&out).unwrap_or(out);
    if dir.join("Cargo.toml").is_file() {
        // CARGO_TARGET_DIR is honoured as cargo itself does, so several projects can share one.
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
        run_tool(
            Command::new("cargo")
                .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(dir.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target),
        )?;
        let built = target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::copy(&built, &out).with_context(|| format!("cannot copy {}", built.display()))?;
    } else {
        let world = project_world(dir)?;
        let wit = tempdir_with_wit()?;
        let js = ["plugin.js", "policy.js"].map(|file| dir.join(file)).into_iter().find(|file| file.is_file());
        if dir.join("app.py").is_file() {
            run_tool(
                Command::new("componentize-py")
                    .arg("-d")
                    .arg(&wit)
                    .arg("-w")
                    .arg(format!("capstan:plugin/{world}@0.1.0"))
                    .args(["componentize", "-p"])
                    .arg(dir)
                    .args(["app", "-o"])
                    .arg(&out),
            )?;
        } else if let Some(source) = js {
            // Without `-d http fetch-event` the component would import wasi:http, which Capstan
            // does not give.
            run_tool(
                Command::new(componentize_js())
                    .arg(source)
                    .arg("--wit")
                    .arg(&wit)
                    .args(["-n", world, "-d", "http", "fetch-event", "-o"])
                    .arg(&out),
            )?;
        } else {
            bail!("{} has no Cargo.toml, app.py, plugin.js or policy.js", dir.display());
        }
        let _ = std::fs::remove_dir_all(&wit);
    }
    println!("built {}", out.display());
    Ok(())
}

fn tempdir_with_wit() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("capstan-wit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, text) in WIT {
        std::fs::write(dir.join(file), text).with_context(|| format!("cannot write {file}"))?;
    }
    Ok(dir)
}

/// componentize-js from the source tree's JavaScript SDK when installed there, else from PATH.
fn componentize_js() -> PathBuf {
    let local = Path::new(SDK_JS).join("node_modules/.bin/componentize-js");
    if local.is_file() { local } else { PathBuf::from("componentize-js") }
}

fn run_tool(command: &mut Command) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command.status().with_context(|| {
        format!("cannot run {program}; install it (scripts/install-deps wasm-langs for Python and JavaScript)")
    })?;
    if !status.success() {
        bail!("{program} failed ({status})");
    }
    Ok(())
}

fn inspect(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::new(&engine, &bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a WebAssembly component: {e}", file.display()))?;
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(&engine).map(|(name, _)| name.to_string()).collect();
    let exports: Vec<String> = ty.exports(&engine).map(|(name, _)| name.to_string()).collect();
    let has = |interface: &str| exports.iter().any(|e| e.starts_with(&format!("capstan:plugin/{interface}")));
    let world = if has("admission") {
        "capstan:plugin/admission-policy"
    } else if has("scheduler") {
        "capstan:plugin/scheduler-plugin"
    } else if has("reconciler") {
        "capstan:plugin/controller"
    } else {
        "none of capstan:plugin's worlds"
    };
    println!("file:    {}", file.display());
    println!("size:    {} bytes", bytes.len());
    println!("world:   {world}");
    println!("exports: {}", exports.join(", "));
    println!("imports: {}", imports.join(", "));
    Ok(())
}

const PLUGIN_YAML: &str = r"# kubectl apply -f plugin.yaml (after `capstan plugin build`); set the path the server reads.
apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata:
  name: NAME
spec:
  kind: admission
  component:
    path: /absolute/path/to/NAME.wasm
  config: {}
  admission:
    mutating: false
    failurePolicy: Fail
    timeoutSeconds: 5
    rules:
    - operations: [CREATE, UPDATE]
      apiGroups: ['*']
      apiVersions: ['*']
      resources: ['*']
";

const SCHEDULER_YAML: &str = r"# kubectl apply -f plugin.yaml (after `capstan plugin build`); set the path the server reads.
# Only nodes labelled capstan.io/ready=true take pods: `kubectl label node NODE capstan.io/ready=true`.
apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata:
  name: NAME
spec:
  kind: scheduler
  component:
    path: /absolute/path/to/NAME.wasm
  config: {label: capstan.io/ready, value: 'true'}
  scheduler:
    profile: default-scheduler
    weight: 1
";

const CONTROLLER_YAML: &str = r"# kubectl apply -f plugin.yaml (after `capstan plugin build`); set the path the server reads.
# ConfigMaps labelled capstan.io/checksum get the annotation capstan.io/data-checksum.
apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata:
  name: NAME
spec:
  kind: controller
  component:
    path: /absolute/path/to/NAME.wasm
  config: {label: capstan.io/checksum, annotation: capstan.io/data-checksum}
  controller:
    workers: 1
";

const RUST_CARGO: &str = r#"[package]
name = "NAME"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
capstan-plugin-sdk = { path = "SDK" }
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1
panic = "abort"

[workspace]
"#;

const RUST_LIB: &str = r#"//! An admission policy: Deployments must carry the label `app`.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse};

struct RequireApp;

impl AdmissionPolicy for RequireApp {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(RequireApp)
    }

    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let Ok(Some(object)) = request.object::<serde_json::Value>() else { return AdmissionResponse::allow() };
        if request.kind.kind != "Deployment" || object.pointer("/metadata/labels/app").is_some() {
            AdmissionResponse::allow()
        } else {
            AdmissionResponse::deny(format!("Deployment {:?} must have the label `app`", request.name))
        }
    }
}

capstan_plugin_sdk::admission_policy!(RequireApp);
"#;

const PYTHON_APP: &str = include_str!("../../../sdk/python/examples/default-team/app.py");

const JS_POLICY: &str = include_str!("../../../sdk/js/examples/registry-allow-list/policy.js");

const RUST_SCHEDULER: &str = include_str!("../../../plugins/scheduler/require-node-label/src/lib.rs");

const PYTHON_SCHEDULER: &str = include_str!("../../../sdk/python/examples/require-node-label/app.py");

const JS_SCHEDULER: &str = include_str!("../../../sdk/js/examples/require-node-label/plugin.js");

const RUST_CONTROLLER: &str = include_str!("../templates/controller.rs");

const PYTHON_CONTROLLER: &str = include_str!("../../../sdk/python/examples/configmap-checksum/app.py");

const JS_CONTROLLER: &str = include_str!("../../../sdk/js/examples/configmap-checksum/plugin.js");
