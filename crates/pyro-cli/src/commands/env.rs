//! `pyro env list | pull | inspect | prune | publish`.

use pyro_core::environments::{EnvironmentInfo, PullOptions};
use pyro_core::{Pyro, Result};

use crate::cli::EnvCommand;
use crate::output::{print_json, progress, say, yes_no};

/// Runs one `env` subcommand.
pub async fn run(pyro: &Pyro, command: EnvCommand, json: bool) -> Result<i32> {
    match command {
        EnvCommand::List => {
            let catalog = pyro.list_environments();
            if json {
                print_json(&catalog);
            } else {
                say!("Catalog version: {}", catalog.catalog_version);
                for env in &catalog.environments {
                    say!("{} [{}] {}", env.spec.name, state_word(env), env.spec.description);
                }
            }
        }
        EnvCommand::Pull(args) => {
            let options = PullOptions { force: args.force, source: args.source, registry: args.registry };
            let sink = progress(json);
            let report = pyro.pull_environment(&args.environment, &options, &sink).await?;
            if json {
                print_json(&report);
            } else {
                let header = if report.already_installed { "Already installed" } else { "Pulled" };
                print_details(header, &report.info);
                say!("Duration: {} ms", report.duration_ms);
            }
        }
        EnvCommand::Inspect(args) => {
            let info = pyro.inspect_environment(&args.environment, args.verify)?;
            if json {
                print_json(&info);
            } else {
                print_details("Environment", &info);
            }
        }
        EnvCommand::Prune => {
            let report = pyro.prune_environments()?;
            if json {
                print_json(&report);
            } else {
                let noun = if report.count == 1 { "entry" } else { "entries" };
                say!("Deleted {} cached environment {noun}.", report.count);
                for name in &report.deleted_environment_dirs {
                    say!("- {name}");
                }
                if !report.deleted_templates.is_empty() {
                    say!("Deleted {} warm template(s).", report.deleted_templates.len());
                }
            }
        }
        EnvCommand::Publish(args) => {
            let published = pyro.publish_environment(&args.environment, &args.registry, &progress(json)).await?;
            if json {
                print_json(&published);
            } else {
                say!("Published: {}", published.reference);
                say!("Digest: {}", published.digest);
            }
        }
    }
    Ok(0)
}

fn state_word(env: &EnvironmentInfo) -> String {
    match &env.state {
        pyro_core::environments::InstallState::Installed => "installed".into(),
        pyro_core::environments::InstallState::NotInstalled => "not installed".into(),
        pyro_core::environments::InstallState::Corrupt(problem) => format!("unusable: {problem}"),
    }
}

fn print_details(header: &str, env: &EnvironmentInfo) {
    say!("{header}: {}", env.spec.name);
    say!("Version: {}", env.spec.version);
    say!("Distribution: {} {}", env.spec.distribution, env.spec.distribution_version);
    say!("Installed: {}", yes_no(env.installed));
    if let pyro_core::environments::InstallState::Corrupt(problem) = &env.state {
        say!("Problem: {problem}");
    }
    say!("Cache dir: {}", env.cache_dir.display());
    say!("Default packages: {}", env.spec.default_packages.join(", "));
    say!("Description: {}", env.spec.description);
    if env.installed {
        say!("Install dir: {}", env.install_dir.display());
        if let Some(manifest) = &env.install_manifest {
            say!("Install manifest: {}", manifest.display());
        }
        for artifact in [&env.kernel, &env.rootfs].into_iter().flatten() {
            say!("Artifact: {} ({} bytes, sha256 {})", artifact.path.display(), artifact.size_bytes, artifact.sha256);
        }
        if let Some(source) = &env.source {
            say!("Source: {source}");
        }
    }
    say!("OCI repository: {}:{}", env.oci_repository, env.oci_reference);
}
