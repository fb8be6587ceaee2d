//! The `operator` and `install` commands.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use threadline_operator::install::{self, InstallOptions};
use threadline_operator::render;
use threadline_operator::run::RunOptions;

#[derive(Args)]
pub struct OperatorArgs {
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Run in the cluster: reconcile OpenTelemetryCollector resources and serve the pod webhook.
    Run(RunArgs),
    /// Print the objects the operator would create for the resources in FILEs, and workloads
    /// annotated for injection with their pod template as the webhook would mutate it.
    Render(RenderArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The operator's namespace (where its webhook certificate Secret lives).
    #[arg(long, env = "POD_NAMESPACE", default_value = install::DEFAULT_NAMESPACE)]
    namespace: String,
    /// Where the pod webhook listens (HTTPS).
    #[arg(long, default_value = "0.0.0.0:9443")]
    webhook_addr: SocketAddr,
    /// Where /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8081")]
    health_addr: SocketAddr,
    /// Use the certificate cert-manager issues instead of generating and renewing one.
    #[arg(long)]
    cert_manager: bool,
}

#[derive(Args)]
struct RenderArgs {
    /// Manifest files (multi-document YAML): OpenTelemetryCollector, Instrumentation, Namespace
    /// and workload resources. Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
}

#[derive(Args)]
pub struct InstallArgs {
    /// Namespace of the operator.
    #[arg(long, default_value = install::DEFAULT_NAMESPACE)]
    namespace: String,
    /// The operator's image (also the default collector image).
    #[arg(long, default_value = threadline_operator::collector::DEFAULT_IMAGE)]
    image: String,
    /// Have cert-manager issue the webhook certificate instead of a self-generated one.
    #[arg(long)]
    cert_manager: bool,
    /// Write the kustomize base (no certificate: the operator creates it) into DIR instead of
    /// printing the objects.
    #[arg(long, value_name = "DIR")]
    write_kustomize: Option<PathBuf>,
}

pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    match args.command {
        OperatorCommand::Run(args) => {
            crate::collector::init_default_logging();
            threadline_operator::run::run(RunOptions {
                namespace: args.namespace,
                webhook_addr: args.webhook_addr,
                health_addr: args.health_addr,
                cert_manager: args.cert_manager,
            })
            .await
        }
        OperatorCommand::Render(args) => render_files(&args.files),
    }
}

fn render_files(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let parsed = render::parse_documents(&text)
            .with_context(|| format!("{} is not valid YAML", file.display()))?;
        documents.extend(parsed);
    }
    let rendered = render::render_documents(&documents);
    for message in &rendered.messages {
        eprintln!("{message}");
    }
    print!("{}", render::to_yaml_stream(&rendered.objects));
    if rendered.failed {
        anyhow::bail!("some resources were not rendered (see above)");
    }
    Ok(())
}

pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    if let Some(dir) = args.write_kustomize {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (name, content) in install::kustomize_base()? {
            let path = dir.join(name);
            std::fs::write(&path, content)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(());
    }
    let objects = install::objects(&InstallOptions {
        namespace: args.namespace,
        image: args.image,
        cert_manager: args.cert_manager,
        generate_certificate: true,
    })?;
    print!("{}", render::to_yaml_stream(&objects));
    Ok(())
}
