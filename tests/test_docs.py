"""The documents a user reads: every relative link in README.md and docs/*.md leads somewhere, and
README's two commands are the ones CI runs, on its first screen."""
import glob
import os
import re
import shlex
import subprocess
import sys

from helpers import ROOT

DOCUMENTS = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FIRST_SCREEN = 50  # lines: what a terminal or a repository page shows before any scrolling


def prose_lines(path):
    """The document's lines outside code: indented or fenced blocks hold commands, not links."""
    with open(path) as f:
        lines = f.read().splitlines()
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            yield line


def anchors(path):
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated one numbered (-1, -2, ...)."""
    seen = {}
    for line in prose_lines(path):
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def broken_links(path):
    for line in prose_lines(path):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):  # https:, mailto: (not checked: no network in the tests)
                continue
            file_part, _, anchor = target.partition("#")
            linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(linked):
                yield f"{target}: no file {os.path.relpath(linked, ROOT)}"
            elif anchor and (not linked.endswith(".md") or anchor not in set(anchors(linked))):
                yield f"{target}: no heading #{anchor} in {os.path.relpath(linked, ROOT)}"


def test_every_relative_link_and_anchor_resolves():
    assert len(DOCUMENTS) > 1, "docs/*.md not found"
    broken = {os.path.relpath(path, ROOT): list(broken_links(path)) for path in DOCUMENTS}
    assert not any(broken.values()), broken


def commands_of_ci():
    """.ci/run's commands, in order: its lines less the shebang, comments, `set` and `cd`."""
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]


def readme_command(containing):
    """The first command line of README (an indented code line of `a && b`) naming `containing`,
    and its line number."""
    with open(os.path.join(ROOT, "README.md")) as f:
        for number, line in enumerate(f, 1):
            if line.startswith("    ") and " && " in line and containing in line:
                return line.strip().split(" && "), number
    raise AssertionError(f"README.md has no command line `... && ...{containing}...`")


def requirement_files(install):
    words = shlex.split(install)
    return [words[i + 1] for i, word in enumerate(words) if word == "-r"]


def test_readme_test_command_is_what_ci_runs_on_the_first_screen():
    ci = commands_of_ci()
    test_command, line = readme_command("pytest")
    assert test_command == ci, f"README.md line {line} says {test_command}, .ci/run runs {ci}"
    assert line <= FIRST_SCREEN, f"README's test command is on line {line}, below the first screen"


def test_readme_run_command_installs_as_ci_does_on_the_first_screen():
    ci_install = commands_of_ci()[0]
    (install, run), line = readme_command("main.py")
    assert install.split(" -r")[0] == ci_install.split(" -r")[0], f"{install!r} installs unlike .ci/run"
    assert requirement_files(install) == ["requirements.txt"]
    assert "requirements.txt" in requirement_files(ci_install)
    assert run == "python dendritic_experiment/main.py"
    assert line <= FIRST_SCREEN, f"README's run command is on line {line}, below the first screen"


def scripts_named():
    """Every `python <folder>/<name>.py` the documents tell a user to run."""
    named = set()
    for path in DOCUMENTS:
        with open(path) as f:
            named |= set(re.findall(r"python ((?:tests|dendritic_experiment)/\w+\.py)", f.read()))
    return sorted(named)


def test_every_script_the_documents_name_runs_with_help_from_the_repository_root():
    """As a user types it: from the repository root, without the PYTHONPATH the tests have (pytest.ini's).
    All at once: each start imports torch."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    started = {script: subprocess.Popen([sys.executable, script, "--help"], cwd=ROOT, env=environment, text=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for script in scripts_named()}
    failing = {}
    for script, process in started.items():
        error = process.communicate(timeout=180)[1]
        if process.returncode != 0:
            failing[script] = (error.strip().splitlines() or ["(no message)"])[-1]
    assert len(started) >= 4 and not failing, failing
