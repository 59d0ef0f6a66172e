//! `cargo xtask`: the developer entry points of the workspace.
fn main() -> anyhow::Result<()> {
    anyhow::bail!("no xtask command is available yet")
}
