""".gitlab-ci.yml: valid YAML with the stages the deployment needs, a test job
that runs exactly the README's test command, a manual bench, and a Helm deploy
per environment whose files exist.

Run by `scripts/deploy check` (unittest, with the deploy virtualenv's PyYAML).
"""

import pathlib
import re
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def readme_test_command():
    """The command under '# Tests:' in the README's 'Two commands' block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("## Two commands", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = block.strip().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# Tests"))
    return next(line.strip() for line in lines[start:] if line.strip() and not line.startswith("#"))


class Pipeline(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(ROOT / ".gitlab-ci.yml", encoding="utf-8") as f:
            cls.ci = yaml.safe_load(f)

    def job(self, name):
        job = dict(self.ci[name])
        parent = job.pop("extends", None)
        if parent:
            merged = dict(self.ci[parent])
            merged.update(job)
            return merged
        return job

    def test_stages_in_order(self):
        self.assertEqual(self.ci["stages"], ["test", "bench", "image", "chart", "deploy"])

    def test_the_test_job_runs_the_readmes_command(self):
        command = readme_test_command()
        self.assertEqual(command, "scripts/test")
        test = self.job("test")
        self.assertEqual(test["stage"], "test")
        self.assertIn(command, test["script"])

    def test_bench_is_manual(self):
        bench = self.job("bench")
        self.assertEqual(bench["stage"], "bench")
        self.assertEqual(bench["when"], "manual")

    def test_the_image_is_built_from_the_dockerfile_with_the_pinned_rust(self):
        image = self.job("image")
        self.assertEqual(image["stage"], "image")
        self.assertTrue(any("-f deploy/Dockerfile" in line for line in image["script"]))
        dockerfile = (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8")
        pinned = re.search(r"^ARG RUST_VERSION=(\S+)$", dockerfile, re.M).group(1)
        self.assertEqual(self.ci["variables"]["RUST_VERSION"], pinned)

    def test_the_chart_is_linted_and_packaged(self):
        chart = self.job("chart")
        self.assertEqual(chart["stage"], "chart")
        script = " ".join(chart["script"])
        self.assertIn("helm lint", script)
        self.assertIn("helm package", script)
        self.assertTrue((ROOT / self.ci["variables"]["CHART_DIR"] / "Chart.yaml").is_file())

    def test_one_helm_deploy_per_environment(self):
        environments = []
        for name in self.ci:
            if not name.startswith("deploy:"):
                continue
            job = self.job(name)
            self.assertEqual(job["stage"], "deploy")
            env = job["variables"]["DEPLOY_ENV"]
            self.assertEqual(job["environment"]["name"], env)
            self.assertTrue(any("helm upgrade --install" in line for line in job["script"]))
            self.assertTrue((ROOT / f"deploy/helm/values-{env}.yaml").is_file(), env)
            self.assertTrue((ROOT / f"deploy/strimzi/{env}/kafka.yaml").is_file(), env)
            topology = job["variables"]["TOPOLOGY"]
            self.assertTrue((ROOT / f"deploy/strimzi/generated/{topology}.yaml").is_file(), topology)
            environments.append(env)
        self.assertEqual(environments, ["dev", "staging", "production"])


if __name__ == "__main__":
    unittest.main()
