//! `kubectl greenlight`: the kubectl plugin people see and steer releases with. `view` makes
//! what is shown from the objects, `client` connects as kubectl does, `act` runs each command,
//! `watch` redraws a view on a terminal, `dashboard` serves it to a browser.

pub mod act;
pub mod client;
pub mod dashboard;
pub mod dora;
pub mod emergency;
pub mod policy;
pub mod view;
pub mod watch;

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::{Connection, PluginError};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-greenlight",
    bin_name = "kubectl greenlight",
    version,
    about = "See and steer Greenlight releases"
)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show a pipeline's stages, or where each release is.
    Get {
        #[command(subcommand)]
        what: Get,
    },
    /// Wait for a release at a stage. Exits 0 when it succeeded there, 1 when it failed, was
    /// rolled back or superseded, 2 on timeout, 3 when it cannot tell (an error).
    Status {
        stage: String,
        /// The release to wait for (default: the one the stage rolls out, else its candidate,
        /// else what it runs).
        #[arg(long)]
        release: Option<String>,
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Approve a release at a stage, as you; says whether your approval counts and why.
    Approve(Decide),
    /// Reject a release at a stage, as you.
    Reject(Decide),
    /// Skip the rest of the current canary step or analysis wait.
    Promote(Steer),
    /// Take traffic off the canary and roll back.
    Abort(Steer),
    /// Roll a release out again after it failed at the stage.
    Retry {
        #[command(flatten)]
        steer: Steer,
        /// The release to roll out again (default: the last one rolled back there).
        #[arg(long)]
        release: Option<String>,
    },
    /// Serve a web dashboard of the namespace's pipelines on 127.0.0.1:3100, acting with your
    /// kubeconfig: the pipeline graph, release timelines, analysis charts, DORA trends, and
    /// approve, promote, abort and retry behind confirmations.
    Dashboard(dashboard::Options),
    /// DORA figures of each pipeline (its production stages) and stage, with their bands:
    /// deployment frequency, lead time, change failure rate, time to restore, rework.
    Dora {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// The period up to now: days, weeks or a duration (e.g. 90d, 2w, 12h).
        #[arg(long, default_value = "90d", value_parser = greenlight_core::dora::parse_period)]
        since: jiff::SignedDuration,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Ask for an emergency rollout of a release at a stage, past what the stage's
    /// spec.emergency lets it bypass, once the emergency's approvers agree.
    Emergency {
        release: String,
        #[arg(long)]
        stage: String,
        /// Why it cannot wait.
        #[arg(long)]
        reason: String,
        /// The incident or ticket it answers.
        #[arg(long)]
        reference: String,
    },
    /// Reviews of emergency rollouts.
    Review {
        #[command(subcommand)]
        what: ReviewCommand,
    },
    /// The reviews of emergency rollouts that are open (overdue ones marked).
    Reviews {
        /// Closed ones too.
        #[arg(long)]
        all: bool,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Which release policy applies to a release at each stage of its pipeline, and why.
    Policy {
        release: String,
        /// Only this stage.
        #[arg(long)]
        stage: Option<String>,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// A release's audit trail, oldest first: who did what, when.
    History {
        release: String,
        #[arg(short, long)]
        output: Option<Output>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReviewCommand {
    /// Close the review of a release's emergency rollout at a stage, with its post-mortem.
    Close {
        release: String,
        #[arg(long)]
        stage: String,
        #[arg(long)]
        post_mortem: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum Get {
    /// The stages of a pipeline in DAG order, with releases, waits, canary weight and gates;
    /// without a name, the namespace's pipelines, one line each.
    Pipeline {
        name: Option<String>,
        /// Redraw as things change (on a terminal, in place).
        #[arg(short, long)]
        watch: bool,
        #[arg(short, long)]
        output: Option<Output>,
    },
    /// Releases, newest first, with their phase at each stage.
    Releases {
        /// Only this pipeline's releases.
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(short, long)]
        output: Option<Output>,
    },
}

#[derive(clap::Args, Debug)]
pub struct Decide {
    pub release: String,
    #[arg(long)]
    pub stage: String,
    /// A comment recorded with the decision.
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct Steer {
    pub stage: String,
    /// A comment recorded with the request.
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    greenlight_core::schedule::parse_duration(text).map_err(|e| e.to_string())
}

/// Data as JSON or YAML, for scripts.
pub fn encode<T: serde::Serialize>(value: &T, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Output::Yaml => serde_norway::to_string(value).unwrap_or_default(),
    }
}

/// Colour only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
pub fn palette() -> view::Palette {
    use std::io::IsTerminal;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    view::Palette {
        on: std::io::stdout().is_terminal() && !no_color,
    }
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> Result<u8, PluginError> {
    let (client, ns) = cli.conn.connect().await?;
    let ctx = act::Ctx { client, ns };
    match cli.command {
        Command::Get {
            what:
                Get::Pipeline {
                    name: Some(name),
                    watch: true,
                    output,
                },
        } => watch::pipeline(&ctx, &name, output).await,
        Command::Get {
            what:
                Get::Pipeline {
                    name: Some(name),
                    output,
                    ..
                },
        } => act::get_pipeline(&ctx, &name, output).await,
        Command::Get {
            what: Get::Pipeline {
                name: None, output, ..
            },
        } => act::get_pipelines(&ctx, output).await,
        Command::Get {
            what: Get::Releases { pipeline, output },
        } => act::get_releases(&ctx, pipeline.as_deref(), output).await,
        Command::Status {
            stage,
            release,
            timeout,
            output,
        } => act::status(&ctx, &stage, release, timeout, output).await,
        Command::Approve(d) => {
            act::decide(&ctx, d, greenlight_api::approval::Decision::Approve).await
        }
        Command::Reject(d) => {
            act::decide(&ctx, d, greenlight_api::approval::Decision::Reject).await
        }
        Command::Promote(s) => {
            act::steer(
                &ctx,
                s,
                greenlight_api::command::CommandAction::Promote,
                None,
            )
            .await
        }
        Command::Abort(s) => {
            act::steer(&ctx, s, greenlight_api::command::CommandAction::Abort, None).await
        }
        Command::Retry { steer, release } => {
            act::steer(
                &ctx,
                steer,
                greenlight_api::command::CommandAction::Retry,
                release,
            )
            .await
        }
        Command::History { release, output } => act::history(&ctx, &release, output).await,
        command @ (Command::Emergency { .. }
        | Command::Review { .. }
        | Command::Reviews { .. }
        | Command::Policy { .. }) => release_management(&ctx, command).await,
        Command::Dora {
            pipeline,
            since,
            output,
        } => act::dora(&ctx, pipeline.as_deref(), since, output).await,
        Command::Dashboard(options) => {
            let config = cli.conn.config().await?;
            dashboard::serve(config, ctx.ns, options).await
        }
    }
}

/// The commands of release management: policies, emergencies and their reviews.
async fn release_management(ctx: &act::Ctx, command: Command) -> Result<u8, PluginError> {
    match command {
        Command::Emergency {
            release,
            stage,
            reason,
            reference,
        } => emergency::ask(ctx, release, stage, reason, reference).await,
        Command::Review {
            what:
                ReviewCommand::Close {
                    release,
                    stage,
                    post_mortem,
                },
        } => emergency::close(ctx, release, stage, post_mortem).await,
        Command::Reviews { all, output } => emergency::list(ctx, all, output, palette()).await,
        Command::Policy {
            release,
            stage,
            output,
        } => act::policy(ctx, &release, stage.as_deref(), output).await,
        _ => Ok(1),
    }
}
