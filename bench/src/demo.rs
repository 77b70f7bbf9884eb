pub async fn run(_args: Args) -> anyhow::Result<serde_json::Value> { anyhow::bail!("not yet") }
#[derive(Debug, clap::Args)] pub struct Args {}
