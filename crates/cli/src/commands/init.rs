//! `isola init [DIR] [--template worker|json|typescript|kv]`: a runnable
//! project in one command: `isola.toml`, the source, and a README with the
//! next commands (dev, deploy, a request to try).

use crate::ExitStatus;
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

/// `isola init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The folder to create the project in (default: the current one).
    dir: Option<PathBuf>,
    /// What the function starts as.
    #[arg(long, short = 't', value_enum, default_value_t = Template::Worker)]
    template: Template,
    /// The function's name (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Template {
    /// A Workers-style `fetch` handler.
    Worker,
    /// A JSON handler: a payload in, a value out.
    Json,
    /// A `fetch` handler in TypeScript.
    Typescript,
    /// A `fetch` handler counting visits in its KV namespace.
    Kv,
}

impl Template {
    /// The entry module's path and source.
    fn module(self) -> (&'static str, &'static str) {
        match self {
            Template::Worker => ("src/index.js", WORKER),
            Template::Json => ("src/index.js", JSON),
            Template::Typescript => ("src/index.ts", TYPESCRIPT),
            Template::Kv => ("src/index.js", KV),
        }
    }

    /// A request to try, given the function's URL.
    fn try_it(self, name: &str) -> String {
        match self {
            Template::Json => {
                format!("curl -X POST http://127.0.0.1:8787/fn/{name}/ -d '{{\"name\":\"world\"}}'")
            }
            _ => format!("curl http://127.0.0.1:8787/fn/{name}/hello"),
        }
    }
}

const WORKER: &str = r#"export default {
  async fetch(request, env, ctx) {
    const url = new URL(request.url);
    return Response.json({ hello: "world", path: url.pathname });
  },
};
"#;

const JSON: &str = r#"// A JSON handler: POST a JSON body (or `isola functions invoke`), get JSON back.
export default async (payload, ctx) => {
  return { hello: payload?.name ?? "world", invocation: ctx.invocationId };
};
"#;

const TYPESCRIPT: &str = r#"interface Env {
  GREETING?: string;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    return new Response(`${env.GREETING ?? "hello"} from ${url.pathname}\n`);
  },
};
"#;

const KV: &str = r#"export default {
  async fetch(request, env) {
    const seen = Number((await env.KV.get("visits")) ?? "0") + 1;
    await env.KV.put("visits", String(seen));
    return Response.json({ visits: seen });
  },
};
"#;

/// A valid function name made from a folder's name.
fn name_from(dir: &Path) -> String {
    let raw = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let name: String = name.trim_matches('-').chars().take(63).collect();
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() {
        "my-function".into()
    } else {
        name
    }
}

/// Runs `isola init`.
pub async fn execute(args: InitArgs) -> anyhow::Result<ExitStatus> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = args.name.unwrap_or_else(|| name_from(&dir));
    isola_store::validate_function_name(&name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (main, source) = args.template.module();
    let kv = matches!(args.template, Template::Kv);
    let toml = format!(
        "name = \"{name}\"\nmain = \"{main}\"\n{}\n[limits]\ncpu_ms = 50\n\n[vars]\nGREETING = \"hello\"\n",
        if kv { "kv_binding = \"KV\"\n" } else { "" }
    );
    let readme = format!(
        "# {name}\n\nAn isola function.\n\n    isola dev .                 # serve it locally, reloading on change\n    isola deploy                # deploy it (creates the function)\n    {}\n    isola functions logs {name} --follow\n",
        args.template.try_it(&name)
    );
    let main_path = dir.join(main);
    if let Some(parent) = main_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let files = [
        (dir.join(crate::project::PROJECT_FILE), toml.as_str()),
        (main_path, source),
        (dir.join("README.md"), readme.as_str()),
    ];
    // A link counts as existing, even one that leads nowhere.
    if let Some((path, _)) = files
        .iter()
        .find(|(path, _)| path.symlink_metadata().is_ok())
    {
        bail!("{} exists already: nothing was changed", path.display());
    }
    for (path, text) in &files {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "Created {name} in {} ({main}).\nNext: isola dev {}   then   isola deploy {}",
        dir.display(),
        dir.display(),
        dir.display()
    );
    Ok(ExitStatus::Success)
}
