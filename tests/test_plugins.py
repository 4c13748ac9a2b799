"""The plugin manager, the `plugins` command, and the example plugin from the docs."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cldyn_cli import __version__, hookimpl, hookspecs, plugins
from cldyn_cli.cli import plugins as plugins_cli
from cldyn_cli.errors import UserError
from cldyn_cli.tasks import TaskOptions, TaskSpec

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin_example"

TASK_PLUGIN = """
from cldyn_cli import hookimpl
from cldyn_cli.tasks import TaskSpec

@hookimpl
def register_tasks(register):
    register(TaskSpec(name={task!r}, description="fake task", load=lambda options: None))
"""


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    for name in ("CLDYN_PLUGINS", "CLDYN_STRICT_PLUGINS", "CLDYN_SHOW_HIDDEN"):
        monkeypatch.delenv(name, raising=False)
    plugins.reset()
    yield
    plugins.reset()


class Site:
    """A folder on sys.path holding plugin modules and the *.dist-info records that announce them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []

    def install(self, dist: str, entry: str, module: str, source: str | None) -> None:
        """Install ``module`` (written from ``source``, or already importable) as plugin ``entry``."""
        if source is not None:
            (self.path / f"{module}.py").write_text(textwrap.dedent(source))
        info = self.path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[cldyn]\n{entry} = {module}\n")
        self.modules.append(module)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A private site folder; entry points of really installed plugins are hidden from the tests."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    real_entry_points = importlib.metadata.entry_points

    def only_this_site(**selection):
        found = real_entry_points(**selection)
        return [ep for ep in found if ep.dist is not None and str(folder) in str(getattr(ep.dist, "_path", ""))]

    monkeypatch.setattr(importlib.metadata, "entry_points", only_this_site)
    installed = Site(folder)
    yield installed
    for module in installed.modules:
        sys.modules.pop(module, None)


def info(name: str, include_hidden: bool | None = None) -> plugins.PluginInfo | None:
    return next((p for p in plugins.list_plugins(include_hidden) if p.name == name), None)


def test_hooks_are_specified():
    hooks = plugins.manager().hook
    assert hooks.register_tasks.spec is not None
    assert hooks.register_commands.spec is not None


def test_every_hook_is_documented():
    doc = (REPO / "docs" / "writing-a-plugin.md").read_text()
    names = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert names == ["register_commands", "register_tasks"]
    for name in names:
        assert getattr(hookspecs, name).__doc__.strip()
        assert f"`{name}" in doc


def test_builtin_reference_task_is_hidden_but_loadable(monkeypatch):
    assert info("toyseg") is None
    assert info("toyseg", include_hidden=True).tasks == ["toyseg"]
    assert info("toyseg", include_hidden=True).package == "cldyn"
    assert plugins.get_task("toyseg").plugin == "toyseg"
    monkeypatch.setenv("CLDYN_SHOW_HIDDEN", "1")
    assert info("toyseg") is not None


def test_entry_point_plugin_is_found(site):
    site.install("cldyn-plugin-fake", "fake", "cldyn_fake_det", TASK_PLUGIN.format(task="fakedet"))
    assert info("fake") == plugins.PluginInfo("fake", "cldyn-plugin-fake", "1.0", ["fakedet"], None,
                                              ["register_tasks"])
    assert plugins.plugin_versions()["fake"] == "cldyn-plugin-fake 1.0"
    spec = plugins.get_task("fakedet")
    assert spec.plugin == "fake" and plugins.get_task("fake").name == "fakedet"


def test_broken_import_is_reported_and_skipped(site, capsys):
    site.install("cldyn-plugin-broken", "broken", "cldyn_broken", "import no_such_library_here\n")
    site.install("cldyn-plugin-fine", "fine", "cldyn_fine", TASK_PLUGIN.format(task="fine"))
    broken = info("broken")
    assert broken.tasks == [] and "ModuleNotFoundError" in broken.error and "no_such_library_here" in broken.error
    assert plugins.get_task("fine").plugin == "fine"
    assert "plugin 'broken' (cldyn-plugin-broken 1.0) failed" in capsys.readouterr().err


def test_strict_mode_makes_a_broken_plugin_fatal(site, monkeypatch):
    site.install("cldyn-plugin-broken", "broken", "cldyn_broken_strict", "import no_such_library_here\n")
    monkeypatch.setenv("CLDYN_STRICT_PLUGINS", "1")
    with pytest.raises(ModuleNotFoundError):
        plugins.list_plugins()


def test_a_hook_that_raises_is_skipped_or_fatal_when_strict(monkeypatch, capsys):
    class Raising:
        @hookimpl
        def register_tasks(self, register):
            raise RuntimeError("weights server down")

    manager = plugins.manager()
    manager.register(Raising(), name="raising")
    try:
        monkeypatch.setenv("CLDYN_STRICT_PLUGINS", "1")
        with pytest.raises(RuntimeError, match="weights server down"):
            plugins.get_task("toyseg")
        monkeypatch.delenv("CLDYN_STRICT_PLUGINS")
        assert plugins.get_task("toyseg").name == "toyseg"
        assert info("raising").error == "RuntimeError: weights server down"
        assert "registered in-process" in capsys.readouterr().err
    finally:
        manager.unregister(name="raising")


def test_misspelt_hook_is_an_error(site):
    site.install("cldyn-plugin-typo", "typo", "cldyn_typo", """
        from cldyn_cli import hookimpl

        @hookimpl
        def register_task(register):
            pass
    """)
    assert "register_task" in info("typo").error
    assert "typo" not in dict(plugins.manager().list_name_plugin())


def test_register_takes_only_task_specs():
    class Wrong:
        @hookimpl
        def register_tasks(self, register):
            register({"name": "det"})

    manager = plugins.manager()
    manager.register(Wrong(), name="wrong")
    try:
        assert "takes a cldyn_cli.tasks.TaskSpec, not dict" in info("wrong").error
    finally:
        manager.unregister(name="wrong")


def test_two_plugins_claiming_one_task_name_is_an_error(site):
    site.install("cldyn-plugin-yolo", "yolo", "cldyn_dup_a", TASK_PLUGIN.format(task="det"))
    site.install("other-detectors", "rtdetr", "cldyn_dup_b", TASK_PLUGIN.format(task="det"))
    with pytest.raises(UserError) as caught:
        plugins.get_task("det")
    message = str(caught.value)
    for part in ("'det'", "'yolo'", "cldyn-plugin-yolo 1.0", "'rtdetr'", "other-detectors 1.0"):
        assert part in message


def test_two_packages_using_one_plugin_name_is_an_error(site):
    site.install("cldyn-plugin-one", "same", "cldyn_same_a", TASK_PLUGIN.format(task="x"))
    site.install("cldyn-plugin-two", "same", "cldyn_same_b", TASK_PLUGIN.format(task="y"))
    with pytest.raises(UserError, match="'same' is used by two packages: cldyn-plugin-(one|two) 1.0 and "
                                        "cldyn-plugin-(one|two) 1.0"):
        plugins.list_plugins()


def test_allowlist_limits_entry_point_plugins(site, monkeypatch, capsys):
    site.install("cldyn-plugin-a", "alpha", "cldyn_allow_a", TASK_PLUGIN.format(task="a"))
    site.install("cldyn-plugin-b", "beta", "cldyn_allow_b", TASK_PLUGIN.format(task="b"))
    monkeypatch.setenv("CLDYN_PLUGINS", "alpha, gamma")
    names = {p.name for p in plugins.list_plugins(include_hidden=True)}
    assert {"alpha", "toyseg"} <= names and "beta" not in names
    assert "CLDYN_PLUGINS names 'gamma'" in capsys.readouterr().err
    plugins.reset()
    monkeypatch.setenv("CLDYN_PLUGINS", "")
    assert {p.name for p in plugins.list_plugins(include_hidden=True)} >= {"toyseg"}
    assert info("alpha") is None


def test_unknown_task_lists_known_ones(site, monkeypatch):
    site.install("cldyn-plugin-fake", "fake", "cldyn_fake_seg", TASK_PLUGIN.format(task="seg"))
    with pytest.raises(UserError, match=r"unknown task 'sge' \(did you mean 'seg'\?\); known tasks: seg$"):
        plugins.get_task("sge")
    monkeypatch.setenv("CLDYN_SHOW_HIDDEN", "1")
    with pytest.raises(UserError, match="known tasks: seg, toyseg"):
        plugins.get_task("nope")


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep `plugins` a sub-command
    plugins_cli.register(app)
    return app


def test_plugins_command_json_and_table(site):
    site.install("cldyn-plugin-fake", "fake", "cldyn_fake_cli", TASK_PLUGIN.format(task="fakedet"))
    runner = CliRunner()
    result = runner.invoke(cli_app(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["name"]: p for p in json.loads(result.output)}
    assert listed["fake"] == {"name": "fake", "package": "cldyn-plugin-fake", "version": "1.0",
                              "tasks": ["fakedet"], "error": None, "hooks": ["register_tasks"]}
    assert "toyseg" not in listed
    assert "toyseg" in {p["name"] for p in json.loads(runner.invoke(cli_app(), ["plugins", "--json", "--all"]).output)}
    table = runner.invoke(cli_app(), ["plugins"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and re.search(r"fake .*cldyn-plugin-fake.*fakedet.*register_tasks.*ok", table.output)


def test_plugins_command_exits_2_on_duplicate_tasks(site):
    site.install("cldyn-plugin-p", "p", "cldyn_dup_cli_p", TASK_PLUGIN.format(task="det"))
    site.install("cldyn-plugin-q", "q", "cldyn_dup_cli_q", TASK_PLUGIN.format(task="det"))
    result = CliRunner().invoke(cli_app(), ["plugins"])
    assert result.exit_code == 2 and "claimed by two plugins" in result.output


def test_plugin_commands_join_the_cli_and_a_broken_one_is_skipped(capsys):
    class Adds:
        @hookimpl
        def register_commands(self, cli):
            cli.command("hello")(lambda: typer.echo("hello from a plugin"))
            group = typer.Typer()
            group.command("fails")(fails)
            cli.add_typer(group, name="group")

    def fails() -> None:
        raise UserError("the plugin's input is wrong; fix it")

    class Breaks:
        @hookimpl
        def register_commands(self, cli):
            raise ValueError("half-installed")

    manager = plugins.manager()
    manager.register(Breaks(), name="breaks")
    manager.register(Adds(), name="adds")
    try:
        app = cli_app()
        plugins_cli.register_plugin_commands(app)
        assert CliRunner().invoke(app, ["hello"]).output == "hello from a plugin\n"
        assert "plugin 'breaks'" in capsys.readouterr().err
        result = CliRunner().invoke(app, ["group", "fails"])  # no user_errors wrapper needed in plugins
        assert result.exit_code == 2 and result.output == "error: the plugin's input is wrong; fix it\n"
    finally:
        manager.unregister(name="adds")
        manager.unregister(name="breaks")


def test_example_plugin_loads_through_its_declared_entry_point(site, monkeypatch):
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    [(entry, module)] = project["entry-points"]["cldyn"].items()
    monkeypatch.syspath_prepend(str(EXAMPLE))
    site.install(project["name"], entry, module, source=None)
    assert info("example") == plugins.PluginInfo("example", "cldyn-plugin-example", "1.0", ["example-sod"], None,
                                                 ["register_commands", "register_tasks"])


def test_the_cldyn_cli_has_the_plugins_command():
    from cldyn_cli.cli import create_app

    result = CliRunner().invoke(create_app(), ["plugins", "--json", "--all"])
    assert result.exit_code == 0, result.output
    assert {"name": "toyseg", "package": "cldyn", "version": __version__, "tasks": ["toyseg"],
            "error": None, "hooks": ["register_tasks"]} in json.loads(result.output)


def test_example_plugin_runs(tmp_path, monkeypatch):
    from cldyn_cli.data.synth import write_dataset

    monkeypatch.syspath_prepend(str(EXAMPLE))
    import cldyn_plugin_example

    write_dataset(tmp_path / "vt", n=3, width=32, height=32, seed=0, layout="vt5000")
    with plugins.use_plugin(cldyn_plugin_example, "example"):
        backend = plugins.get_task("example").load(TaskOptions())
        data = backend.dataset(tmp_path / "vt", "train")  # the core passes lower-case split names
        batch = backend.collate([data[0], data[1]])
        assert batch.vis.shape == (2, 3, 32, 32) and batch.targets.shape == (2, 1, 32, 32)
        fused = batch.vis.clone().requires_grad_()
        backend.loss(fused, batch.targets).backward()
        assert fused.grad.abs().sum() > 0
        assert backend.features(batch.vis).shape == (2, 8, 32, 32)
        assert set(backend.evaluate([(batch.vis, batch.targets)])) == {"MAE"}
        app = cli_app()
        plugins_cli.register_plugin_commands(app)
        assert "taps 'encoder'" in CliRunner().invoke(app, ["example", "info"]).output
    sys.modules.pop("cldyn_plugin_example", None)



def test_use_plugin_sets_an_installed_copy_aside_and_restores_it():
    class Installed:
        @hookimpl
        def register_tasks(self, register):
            register(TaskSpec(name="copy", description="installed", load=lambda options: None))

    class UnderTest:
        @hookimpl
        def register_tasks(self, register):
            register(TaskSpec(name="copy", description="in-process", load=lambda options: None))

    manager = plugins.manager()
    manager.register(Installed(), name="copy")
    try:
        with plugins.use_plugin(UnderTest(), "copy"):  # no "already registered" error
            assert plugins.get_task("copy").description == "in-process"
        assert plugins.get_task("copy").description == "installed"
    finally:
        manager.unregister(name="copy")
