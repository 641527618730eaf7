"""chatterd.reload without processes: the options read again (the command line over the file,
as at the start), what a reload applies to a runtime of a simulated node (tags as a difference,
handlers), and a bad file or bad tags changing nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatterd.configfile import ConfigError
from chatterd.core.config import LAN
from chatterd.handlers import parse_spec
from chatterd.reload import Reloader, read_options
from chatterd.runtime import Options, Runtime
from chatterd.sim import Simulation


def runtime(argv: list[str]) -> Runtime:
    sim = Simulation(seed=3)
    sim.start_cluster(2)
    node = sim.nodes["n0"]
    rt = Runtime(Options(listen=("127.0.0.1", 0), name=node.name, config=LAN, argv=argv))
    rt.node = node
    return rt


def test_the_command_line_wins_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('tag = { dc = "east" }\nfanout = 4\nevent_handler = ["member-join=true"]\n')
    args = read_options(["--config", str(config), "--fanout", "5"])
    assert args.tags == [("dc", "east")] and args.fanout == 5
    assert args.handlers == [parse_spec("member-join=true")]
    assert read_options(["--name", "x"]).tags == []  # no file: the command line alone
    config.write_text("fanout = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        read_options(["--config", str(config)])


async def test_a_reload_applies_tags_as_a_difference_and_handlers(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('tag = { dc = "east", rack = "r1" }\n')
    argv = ["--config", str(config)]
    rt = runtime(argv)
    assert rt.node is not None
    reloader = Reloader(rt, read_options(argv))
    rt.update_tags({"dc": "east", "rack": "r1", "owner": "ops"}, [])  # owner: set by chatterd tags
    inc = rt.node.inc
    config.write_text('tag = { dc = "west" }\nevent_handler = ["*=true"]\nlisten = "127.0.0.1:9"\n')
    result = await reloader.reload()
    assert result == {"changed": ["tags", "handlers"], "needs_restart": ["listen"]}
    assert rt.node.tags == {"dc": "west", "owner": "ops"} and rt.node.inc == inc + 1
    assert rt.handlers.specs == [parse_spec("*=true")]

    config.write_text(f'tag = {{ dc = "{"x" * 600}" }}\n')  # over the size limit: refused whole
    assert await reloader.reload() is None
    assert rt.node.tags == {"dc": "west", "owner": "ops"} and rt.node.inc == inc + 1
    config.write_text("nonsense = 1\n")
    assert await reloader.reload() is None
    assert rt.handlers.specs == [parse_spec("*=true")]
    config.write_text('tag = { dc = "west" }\nevent_handler = ["*=true"]\nlisten = "127.0.0.1:9"\n')
    # The same again: nothing to apply; listen still differs from what the node runs with.
    assert await reloader.reload() == {"changed": [], "needs_restart": ["listen"]}
