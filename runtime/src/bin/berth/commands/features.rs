pub fn run() -> anyhow::Result<()> {
    out!(
        "{}",
        serde_json::to_string_pretty(&berth_runtime::features::features())?
    );
    Ok(())
}
