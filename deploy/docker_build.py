#!/usr/bin/env python3
"""Builds the binary the way the Dockerfile's build stage does, without a
Docker engine: the files its COPY lines name (and nothing else, honouring
.dockerignore), copied into a fresh directory, then its ENV, ARG defaults
and `cargo build` RUN line, run there. A COPY that misses a file the build
needs, or a build setting that breaks it, fails here as it would in
`docker build`. Then checks the binary the image would ship: it runs, and it
carries no debug sections.

    python3 deploy/docker_build.py [TARGET_DIR]

TARGET_DIR (default target/docker) keeps cargo's build between runs; the
sources are always copied fresh.
"""

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def logical_lines(text):
    """Dockerfile lines with continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def build_stage(lines):
    """The instructions of the stage named `build`."""
    stage, inside = [], False
    for line in lines:
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            inside = line.lower().endswith(" as build")
            continue
        if inside:
            stage.append(line)
    if not stage:
        sys.exit("Dockerfile: no stage named build")
    return stage


def ignored(path, patterns):
    """.dockerignore semantics: the last pattern that matches decides, and
    `!` re-includes; a directory pattern covers everything under it."""
    verdict = False
    for pattern in patterns:
        include = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            verdict = not include
    return verdict


def copy_context(sources, dest_dir, context, patterns):
    for source in sources:
        src = os.path.join(ROOT, source)
        if not os.path.exists(src):
            sys.exit(f"Dockerfile: COPY {source}: no such file in the build context")
        if os.path.isdir(src):
            for dirpath, _, files in os.walk(src):
                for name in files:
                    rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
                    if ignored(rel, patterns):
                        continue
                    target = os.path.join(context, dest_dir, os.path.relpath(rel, source))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(os.path.join(ROOT, rel), target)
        elif not ignored(source, patterns):
            target = os.path.join(context, dest_dir, os.path.basename(source))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(src, target)


def main():
    target_dir = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "docker"))
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        stage = build_stage(logical_lines(f.read()))
    patterns = []
    ignore_file = os.path.join(ROOT, ".dockerignore")
    if os.path.exists(ignore_file):
        with open(ignore_file) as f:
            patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]

    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = target_dir
    workdir = "."
    build = None
    with tempfile.TemporaryDirectory() as context:
        for line in stage:
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "WORKDIR":
                workdir = "." + rest.strip() if rest.startswith("/") else rest.strip()
            elif word == "COPY":
                if "--from" in rest:
                    continue
                args = shlex.split(rest)
                *sources, dest = args
                dest_dir = os.path.normpath(os.path.join(workdir, dest))
                copy_context(sources, dest_dir, context, patterns)
            elif word in ("ENV", "ARG"):
                for pair in shlex.split(rest):
                    if "=" in pair:
                        key, value = pair.split("=", 1)
                        env.setdefault(key, value) if word == "ARG" else env.__setitem__(key, value)
            elif word == "RUN" and "cargo build" in rest:
                build = rest
        if build is None:
            sys.exit("Dockerfile: the build stage has no `cargo build` RUN line")
        # The build command up to the first `&&` (what follows prepares the
        # runtime stage's directories). ${VAR} references use ENV and ARG.
        command = build.split("&&")[0].strip()
        src_dir = os.path.join(context, workdir)
        print(f"docker build stage, replayed in a copy of its context: {command}", flush=True)
        result = subprocess.run(["bash", "-c", command], cwd=src_dir, env=env)
        if result.returncode != 0:
            sys.exit(f"Dockerfile: `{command}` failed in the build context (exit {result.returncode})")

    binary = os.path.join(target_dir, "release", "understudy")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    sections = subprocess.run(["readelf", "-S", "-W", binary], capture_output=True, text=True, check=True).stdout
    debug = sorted({w for w in sections.split() if w.startswith(".debug")})
    if debug:
        sys.exit(f"Dockerfile: the image's binary keeps debug sections: {', '.join(debug)}")
    size = os.path.getsize(binary) / 2**20
    print(f"Dockerfile: builds from its own COPY set; {version}; {size:.1f} MiB, no debug sections")


if __name__ == "__main__":
    main()
