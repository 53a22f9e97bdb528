"""The ``cache`` commands: where compiled C steps are kept, and emptying it."""

from __future__ import annotations

import dataclasses

import click

from lstm_graph.cli.app import emit_json, main, say
from lstm_graph.executors import buildcache


@main.group()
def cache() -> None:
    """The private cache of compiled native steps."""


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(as_json: bool) -> None:
    """Where the cache is, how many builds it holds, and the compiler (changes nothing)."""
    found = buildcache.info()
    if as_json:
        emit_json(dataclasses.asdict(found))
        return
    size, limit = found.bytes / 2**20, found.limit_bytes / 2**20
    unusable = (f" (not usable: {found.problem}; each run compiles into a private temporary "
                "directory)" if found.problem else "" if found.made else
                " (not made yet: the first native build makes it)")
    say(f"directory  {found.directory}{unusable}")
    say(f"builds     {found.entries} ({size:.1f} MiB of at most {limit:.0f} MiB)")
    compiler = found.compiler or "none found (the NumPy plan runs instead)"
    version = f" ({found.compiler_version})" if found.compiler_version else ""
    say(f"compiler   {compiler}{version}")


@cache.command()
def clear() -> None:
    """Remove every compiled step; they are rebuilt when next needed. Builds running in
    other processes are left alone, and nothing outside the cache's directory is touched."""
    done = buildcache.clear()
    if not done.made:
        say(f"there is no build cache at {done.directory} yet; nothing was removed", err=True)
        return
    running = (f" ({done.running} build{'s' if done.running != 1 else ''} in progress left "
               "alone)" if done.running else "")
    say(f"removed {done.builds} build{'s' if done.builds != 1 else ''} from "
        f"{done.directory}{running}", err=True)
