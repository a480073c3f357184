//! The checked-in Strimzi resources (deploy/strimzi/generated/) are exactly
//! what `tradeflow plan --emit strimzi` prints for the deployment today, so a
//! change to the flow's topics, stores or ACLs that is not regenerated
//! (`scripts/deploy generate`) fails here; and the chart's dashboards are
//! deploy/grafana's.

use std::path::{Path, PathBuf};

use codecs::topics::TopicNamespace;
use services::deployment::{plan, strimzi_yaml, Topology};
use tuning::NodeTuning;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The core map scripts/deploy generates from (its ownership.partitions).
const PLAN_CONFIG: &str = "tuning/dedicated-8-core.toml";

#[test]
fn generated_strimzi_files_match_the_plan() -> anyhow::Result<()> {
    let tuning = NodeTuning::load(root().join(PLAN_CONFIG))?;
    let partitions = i32::try_from(tuning.ownership().partitions)?;
    for topology in [Topology::Node, Topology::PerService] {
        let path = root().join(format!("deploy/strimzi/generated/{topology}.yaml"));
        let expected = strimzi_yaml(
            &plan(
                &TopicNamespace::none(),
                topology,
                partitions,
                3,
                tuning.state().changelog_layout,
            ),
            "tradeflow",
        )?;
        let checked_in = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        assert!(
            checked_in == expected,
            "{} is stale: run `scripts/deploy generate` and commit the result",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn the_charts_dashboards_are_deploy_grafanas() -> anyhow::Result<()> {
    // A link, so the chart never holds a stale copy of a dashboard.
    let chart = std::fs::canonicalize(root().join("deploy/helm/tradeflow/dashboards"))?;
    let grafana = std::fs::canonicalize(root().join("deploy/grafana"))?;
    assert_eq!(chart, grafana);
    Ok(())
}
