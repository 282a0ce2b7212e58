//! `strata demo`: the node's main job on embedded defaults (the lead
//! writes it).

/// Runs the demo.
pub(crate) async fn run() -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}
