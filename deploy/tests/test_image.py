"""deploy/Dockerfile, which no container runtime builds here: parsed, and
checked against the build. The binaries it copies are [[bin]] targets its
cargo command builds, in the packages it names; the core maps it copies exist;
the user it runs as is the one it creates, with the uid the Helm chart runs
pods as; and the build is --locked with a Rust no older than the workspace's.

Run by `scripts/deploy check` (unittest).
"""

import pathlib
import re
import shlex
import tomllib
import unittest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def instructions(text):
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        word, _, rest = current.partition(" ")
        logical.append((word.upper(), rest.strip()))
        current = ""
    return logical


def stages(steps):
    """{stage name: [(INSTRUCTION, args), ...]} in file order."""
    named, name = {}, None
    for word, rest in steps:
        if word == "FROM":
            parts = rest.split()
            name = parts[parts.index("AS") + 1] if "AS" in parts else str(len(named))
            named[name] = []
        elif name is not None:
            named[name].append((word, rest))
    return named


def binaries():
    """[[bin]] name -> package name, over the workspace's members."""
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
    found = {}
    for member in workspace["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text(encoding="utf-8"))
        for target in manifest.get("bin", []):
            found[target["name"]] = manifest["package"]["name"]
    return found


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8")
        cls.steps = instructions(cls.text)
        cls.stages = stages(cls.steps)

    def test_two_stages_on_slim_debian(self):
        self.assertEqual(list(self.stages), ["build", "runtime"])
        froms = [rest for word, rest in self.steps if word == "FROM"]
        self.assertTrue(froms[0].startswith("rust:${RUST_VERSION}-slim-"))
        self.assertTrue(froms[1].startswith("debian:${DEBIAN_RELEASE}-slim"))

    def test_the_pinned_rust_is_locked_and_not_older_than_the_workspaces(self):
        pinned = re.search(r"^ARG RUST_VERSION=(\S+)$", self.text, re.M).group(1)
        needed = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))["workspace"]["package"]["rust-version"]
        as_tuple = lambda v: tuple(int(x) for x in v.split("."))
        self.assertGreaterEqual(as_tuple(pinned), as_tuple(needed))
        builds = [rest for word, rest in self.stages["build"] if word == "RUN" and "cargo build" in rest]
        self.assertEqual(len(builds), 1)
        self.assertIn("--locked", builds[0])
        self.assertIn("--release", builds[0])

    def test_the_copied_binaries_are_built_targets(self):
        build = next(rest for word, rest in self.stages["build"] if word == "RUN" and "cargo build" in rest)
        words = shlex.split(build.replace("&&", " && "))
        built = {words[i + 1] for i, w in enumerate(words) if w == "--bin"}
        packages = {words[i + 1] for i, w in enumerate(words) if w == "-p"}
        targets = binaries()
        copied = []
        for word, rest in self.stages["runtime"]:
            if word == "COPY" and rest.startswith("--from=build"):
                source, destination = rest.split()[1:3]
                name = pathlib.PurePosixPath(source).name
                self.assertEqual(pathlib.PurePosixPath(destination).name, name)
                copied.append(name)
        self.assertEqual(sorted(copied), ["loadgen", "tradeflow"])
        for name in copied:
            self.assertIn(name, built)
            self.assertIn(name, targets, "not a [[bin]] of the workspace")
            self.assertIn(targets[name], packages)
        # The features it asks for (if any: TLS is always built now) exist in those packages.
        features = build.split("--features", 1)[1].split()[0] if "--features" in build else ""
        for feature in re.findall(r"([\w-]+)/([\w-]+)", features):
            package, name = feature
            member = {"tradeflow-services": "services", "tradeflow-loadgen": "loadgen"}[package]
            manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text(encoding="utf-8"))
            self.assertIn(name, manifest.get("features", {}), feature)

    def test_the_core_maps_it_copies_exist(self):
        copies = [rest for word, rest in self.stages["runtime"] if word == "COPY" and "--from" not in rest]
        self.assertEqual(len(copies), 1)
        sources = copies[0].split()[:-1]
        self.assertTrue(sources)
        for source in sources:
            self.assertTrue((ROOT / source).is_file(), source)
            self.assertTrue(source.startswith("tuning/") and source.endswith(".toml"))

    def test_it_runs_as_the_user_it_creates_with_the_charts_uid(self):
        user = next(rest for word, rest in self.stages["runtime"] if word == "USER").split(":")[0]
        self.assertNotIn(user, ("root", "0"))
        created = " ".join(rest for word, rest in self.stages["runtime"] if word == "RUN")
        match = re.search(r"useradd [^&]*--uid (\d+)[^&]* " + re.escape(user) + r"\b", created)
        self.assertIsNotNone(match, "the runtime stage does not create the user it names")
        chart = (ROOT / "deploy/helm/tradeflow/templates/statefulset.yaml").read_text(encoding="utf-8")
        self.assertIn(f"runAsUser: {match.group(1)}", chart)

    def test_the_context_leaves_out_build_outputs(self):
        ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
        for path in ("target/", ".cache/", ".git/"):
            self.assertIn(path, ignored)


if __name__ == "__main__":
    unittest.main()
