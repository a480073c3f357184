"""The Helm chart's rendered manifests (scripts/deploy check renders them into
$RENDERED): the core maps go through tradeflow's own parser, each workload's
Kafka user is one the generated Strimzi files define, the pods are Guaranteed
with whole CPUs, and the probes, Services, budgets and dashboards are there.

Run by `scripts/deploy check` (unittest, with the deploy virtualenv's PyYAML).
"""

import os
import pathlib
import subprocess
import tempfile
import tomllib
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RENDERED = pathlib.Path(os.environ.get("RENDERED", ""))
TRADEFLOW_BIN = os.environ.get("TRADEFLOW_BIN", "")


def documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def partitions_of(specs):
    """["0-2", 5] -> {0, 1, 2, 5}, as tuning reads partition lists."""
    owned = set()
    for spec in specs:
        text = str(spec)
        if "-" in text:
            low, high = text.split("-")
            owned.update(range(int(low), int(high) + 1))
        else:
            owned.add(int(text))
    return owned


@unittest.skipUnless(RENDERED.is_dir() and TRADEFLOW_BIN, "run by scripts/deploy check")
class RenderedChart(unittest.TestCase):
    TOPOLOGIES = ("node", "per-service")

    def rendered(self, name):
        return documents(RENDERED / f"{name}.yaml")

    def every_rendering(self):
        """Both topologies, the options switched on, each environment's values."""
        names = sorted(p.stem for p in RENDERED.glob("*.yaml") if p.stem != "servicemonitor")
        self.assertGreaterEqual(len(names), 6, names)
        return names

    def test_core_maps_parse_and_split_partitions_between_pods(self):
        for name in self.every_rendering():
            for config_map in of_kind(self.rendered(name), "ConfigMap"):
                if not config_map["metadata"]["name"].endswith("-core-maps"):
                    continue
                owned_by_pod = []
                for file_name, text in config_map["data"].items():
                    core_map = tomllib.loads(text)
                    pod = file_name.removesuffix(".toml")
                    self.assertEqual(core_map["node"]["name"], pod)
                    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                        f.write(text)
                        f.flush()
                        run = subprocess.run(
                            [TRADEFLOW_BIN, "plan", "--config", f.name],
                            capture_output=True,
                            text=True,
                        )
                    self.assertEqual(run.returncode, 0, f"{file_name}: {run.stderr}")
                    if core_map["ownership"]["mode"] == "core-map":
                        owned = set()
                        for shard in core_map["shard"]:
                            owned |= partitions_of(shard["partitions"])
                        owned_by_pod.append(owned)
                if owned_by_pod:
                    every = set().union(*owned_by_pod)
                    total = sum(len(o) for o in owned_by_pod)
                    self.assertEqual(total, len(every), "pods own a partition twice")
                    self.assertEqual(every, set(range(core_map["ownership"]["partitions"])))

    def test_each_workload_logs_in_as_a_generated_kafka_user(self):
        for topology in self.TOPOLOGIES:
            generated = documents(ROOT / "deploy/strimzi/generated" / f"{topology}.yaml")
            users = {u["metadata"]["name"] for u in of_kind(generated, "KafkaUser")}
            rendered = self.rendered(topology)
            sets = of_kind(rendered, "StatefulSet")
            core_maps = {c["metadata"]["name"]: c for c in of_kind(rendered, "ConfigMap")}
            self.assertEqual(len(sets), len(users), topology)
            for workload in sets:
                container = workload["spec"]["template"]["spec"]["containers"][0]
                args = container["args"]
                # The password is never an argument (/proc/<pid>/cmdline would show it).
                self.assertFalse([a for a in args if "sasl." in a or "password" in a], args)
                maps = core_maps[workload["metadata"]["name"] + "-core-maps"]["data"]
                for text in maps.values():
                    security = tomllib.loads(text)["kafka"]["security"]
                    self.assertEqual(security["protocol"], "SASL_SSL")
                    self.assertEqual(security["password_env"], "KAFKA_PASSWORD")
                    self.assertNotIn("password", security)
                user = tomllib.loads(next(iter(maps.values())))["kafka"]["security"]["username"]
                app_id = next(a.split("=", 1)[1] for a in args if a.startswith("--application-id="))
                secret = next(
                    e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if e["name"] == "KAFKA_PASSWORD"
                )
                self.assertIn(user, users, topology)
                self.assertEqual(user, app_id)
                self.assertEqual(secret, user)

    def test_pods_are_guaranteed_with_whole_cpus_and_probed(self):
        for name in self.every_rendering():
            for workload in of_kind(self.rendered(name), "StatefulSet"):
                pod = workload["spec"]["template"]["spec"]
                for container in pod["containers"]:
                    resources = container["resources"]
                    self.assertEqual(resources["requests"], resources["limits"])
                    self.assertRegex(str(resources["limits"]["cpu"]), r"^[1-9][0-9]*$")
                    self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/health/live")
                    self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/health/ready")
                if not name.endswith("dev"):
                    self.assertTrue(pod["nodeSelector"], name)
                    self.assertTrue(pod["tolerations"], name)
                self.assertIn("podAntiAffinity", pod["affinity"])
                self.assertTrue(pod["securityContext"]["runAsNonRoot"])

    def test_api_services_budgets_and_dashboards(self):
        for name in self.TOPOLOGIES:
            docs = self.rendered(name)
            api = [s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-api")]
            self.assertEqual(len(api), 1, name)
            ports = {p["name"]: p["port"] for p in api[0]["spec"]["ports"]}
            self.assertEqual(ports, {"rest": 8080, "grpc": 50051})
            self.assertEqual(len(of_kind(docs, "PodDisruptionBudget")), len(of_kind(docs, "StatefulSet")))
            dashboards = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboards")]
            self.assertEqual(len(dashboards), 1)
            for file in (ROOT / "deploy/grafana").glob("*.json"):
                self.assertEqual(dashboards[0]["data"][file.name], file.read_text(encoding="utf-8").rstrip("\n"))
        monitor = documents(RENDERED / "servicemonitor.yaml")
        self.assertEqual([d["kind"] for d in monitor], ["ServiceMonitor"])

    def test_options_switch_on_the_schema_registry_and_api_tokens(self):
        docs = self.rendered("options")
        self.assertTrue(any(d["metadata"]["name"].endswith("schema-registry") for d in of_kind(docs, "Deployment")))
        order = next(s for s in of_kind(docs, "StatefulSet") if s["metadata"]["name"].endswith("-order"))
        volumes = {v["name"]: v for v in order["spec"]["template"]["spec"]["volumes"]}
        self.assertEqual(volumes["api-tokens"]["secret"]["secretName"], "tradeflow-api-tokens")
        args = order["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--api-tokens=/etc/tradeflow/api-tokens/tokens", args)
        self.assertIn("--namespace=desk-a", args)
        self.assertIn("--application-id=desk-a-tradeflow-order", args)


if __name__ == "__main__":
    unittest.main()
