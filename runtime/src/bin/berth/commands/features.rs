pub fn run() -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(&berth_runtime::features::features())?
    );
    Ok(())
}
