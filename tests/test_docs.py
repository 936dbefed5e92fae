"""The manual cannot drift: its generated tables are current, every registered layer, task and
experiment is in them, every path, link and `python -m` module that README.md, docs/ and
benchmarks/README.md name exists, and every `python -m train` command of the README and docs/ composes."""

import importlib.machinery
import importlib.util
import re
import shlex
import subprocess

import pytest

from conftest import ROOT, compose_config

PAGES = ["README.md", "benchmarks/README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]


def test_the_generated_tables_are_current():
    from src import docs

    stale = docs.regenerate(write=False)
    assert not stale, f"stale generated tables: {', '.join(stale)}; run `python -m src.docs` to regenerate them"


def _block(page, name):
    from src.docs import BEGIN, END

    text = (ROOT / page).read_text()
    start = text.index(BEGIN.format(name))
    return text[start : text.index(END, start)]


def test_every_registered_layer_task_and_experiment_is_listed():
    from src import docs
    from src.utils import registry

    layers, tasks, experiments = (_block(page, name) for name, (page, _) in docs.TABLES.items())
    assert [n for n in registry.layer if f"| `{n}` |" not in layers] == []
    assert [m for m in docs.model_configs() if f"`model={m}`" not in layers] == []
    atomic = docs._sequence1d_tasks(registry.dataset["sequence1d"].rsplit(".", 1)[0])
    assert len(atomic) > 5
    families = ("sequence1d", "mad")  # listed task by task
    mad = docs._sequence1d_tasks(registry.dataset["mad"].rsplit(".", 1)[0])
    assert [n for n in [*registry.dataset, *atomic, *mad] if n not in families and f"| `{n}` |" not in tasks] == []
    assert [e for e in docs.experiments() if f"| `{e}` |" not in experiments] == []


def _tracked_top_level():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split("/")[0] for line in files.splitlines()}


def _expand(path):
    """`a/{b,c}/d` -> [a/b/d, a/c/d]; placeholders `<x>` and `...` become globs."""
    match = re.search(r"\{([^{}]*)\}", path)
    if match:
        return [q for part in match.group(1).split(",") for q in _expand(path.replace(match.group(0), part, 1))]
    return [re.sub(r"<[^<>]*>|\.\.\.", "*", path)]


def named_paths(text, top_level):
    """The repository paths named in backticks: words that start with a tracked top-level entry."""
    for span in re.findall(r"`([^`\n]+)`", text):
        for word in span.split():
            word = word.strip(",;:()'\"").removeprefix("./")
            word = re.sub(r"^\S*=", "", word)  # key=path
            head = word.split("/")[0]
            if head in top_level and (word == head or "/" in word) and not word.startswith("-"):
                yield word


def named_links(text):
    """The relative targets of Markdown links `[...](target)`, without web addresses."""
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)]


def _slug(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _module_exists(name):
    """Whether `python -m name` finds a module: below ROOT without importing anything (a package's
    __init__ may import torch), elsewhere (pytest) by importlib.util.find_spec."""
    if importlib.machinery.PathFinder.find_spec(name.split(".")[0], [str(ROOT)]) is None:
        return importlib.util.find_spec(name) is not None
    path = [str(ROOT)]
    for part in name.split("."):
        spec = importlib.machinery.PathFinder.find_spec(part, path)
        if spec is None:
            return False
        path = list(spec.submodule_search_locations or [])
    return True


def dead_references(page):
    """What `page` names that does not exist: paths, links (and their #anchors), modules."""
    text = (ROOT / page).read_text()
    dead, top_level = [], _tracked_top_level()
    for word in named_paths(text, top_level):
        if not any(list(ROOT.glob(p)) if "*" in p else (ROOT / p).exists() for p in _expand(word)):
            dead.append(f"path `{word}`")
    for link in named_links(text):
        target, _, anchor = link.partition("#")
        path = (ROOT / page).parent / target if target else ROOT / page
        if not path.exists():
            dead.append(f"link ({link})")
        elif anchor and path.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", path.read_text(), re.M)
            if anchor not in {_slug(h) for h in headings}:
                dead.append(f"anchor ({link})")
    for module in re.findall(r"python -m ([\w.]+)", text):
        if not _module_exists(module):
            dead.append(f"module `python -m {module}`")
    return dead


@pytest.mark.parametrize("page", PAGES)
def test_every_path_link_and_module_named_exists(page):
    dead = dead_references(page)
    assert not dead, f"{page} names what does not exist: {'; '.join(dead)}"


def test_the_check_finds_what_is_dead(tmp_path, monkeypatch):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("`src/no_such_file.py`, `src/docs.py`, [x](../README.md#quick-start), [y](gone.md), "
                    "[z](../README.md#no-such-heading), `python -m src.no_such_module`, `python -m src.docs`\n")
    (tmp_path / "README.md").write_text((ROOT / "README.md").read_text())
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "__init__.py").write_text("")
    (tmp_path / "src" / "docs.py").write_text("")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    monkeypatch.setitem(globals(), "_tracked_top_level", lambda: {"src", "README.md", "docs"})
    assert dead_references("docs/page.md") == ["path `src/no_such_file.py`", "link (gone.md)",
                                                "anchor (../README.md#no-such-heading)",
                                                "module `python -m src.no_such_module`"]


PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
SHELL_VARIABLES = {name: value for page in PAGES
                   for name, value in re.findall(r'^([A-Z_]+)="([^"]*)"', (ROOT / page).read_text(), re.M)}


def train_commands(page):
    """The `python -m train` commands of a manual page (continuation lines joined, a leading
    `CUDA_VISIBLE_DEVICES=...` dropped, `$TASK` and `$L` given a value); a multirun's first job."""
    text = (ROOT / page).read_text().replace("\\\n", " ").replace("$TASK", "shift").replace("$L", "64")
    for name, value in SHELL_VARIABLES.items():  # CPU="..." on a page, then `... $CPU` on any
        text = re.sub(rf"\${name}\b", value, text)
    lines = [line.split("  #")[0].split("&& ")[-1].strip() for line in text.splitlines()]
    lines += re.findall(r"`(python -m train[^`]*)`", text)
    commands = []
    for line in lines:
        line = re.sub(r"^([A-Z_]+=\S*\s+)+", "", line)  # CUDA_VISIBLE_DEVICES=0, OMP_NUM_THREADS=1, ...
        if line.startswith("python -m train"):
            words = shlex.split(line)[3:]
            if any(w in ("...", "<overrides>") or re.search(r"<\w+>|=[EM]$", w) for w in words):
                continue  # a pattern (experiment=E model=M, dataset.task=<task>), not a command
            commands.append([first_choice(w) if "=" in w else w for w in words if w != "-m"])
    return commands


def first_choice(word):
    """`key=a,b` -> `key=a`, and `key={a:1,b:2},{a:3}` -> `key={a:1,b:2}` (commas inside braces
    and brackets kept)."""
    depth = 0
    for i, char in enumerate(word):
        depth += char in "{[" and 1 or char in "}]" and -1 or 0
        if char == "," and depth == 0:
            return word[:i]
    return word


COMMANDS = [(page, c) for page in PAGES for c in train_commands(page)]


def test_the_manual_names_train_commands():
    assert len(train_commands("README.md")) >= 8 and len(COMMANDS) >= 60


@pytest.mark.parametrize("page, overrides", COMMANDS, ids=lambda o: o if isinstance(o, str) else " ".join(o)[:60])
def test_every_train_command_of_the_manual_composes(page, overrides):
    """Every command a page shows composes and passes the checks (the slow tier runs them)."""
    launch = ("hydra.", "hydra/", "train.resume", "train.ckpt")  # where and how it runs, not what
    config = compose_config([o for o in overrides if not o.startswith(launch)])
    assert config.model.layer._name_ or config.model.layers
