"""``oix demo``: publish the example reports of ``deploy/examples`` to the bus."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from services.bus import Exchange, OixError
from services.host import EXIT_CONFIG, broker_settings_or_exit, fail, out, run

if TYPE_CHECKING:
    from services.demo._stream import Published

commands = typer.Typer(
    name="demo",
    help="Publish the example reports of deploy/examples, signed by their agencies, to the bus.",
    no_args_is_help=False,
    subcommand_metavar="",
)


@commands.callback(invoke_without_command=True)
def demo(
    rounds: Annotated[int, typer.Option(help="Rounds of all examples; 0 runs until Ctrl-C.")] = 1,
    interval: Annotated[float, typer.Option(help="Seconds between two reports.")] = 0.2,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers [env: OIX_BOOTSTRAP].")
    ] = None,
) -> None:
    """Publish the example reports of deploy/examples, signed by their agencies, to the bus."""
    # The SDK loads the Prometheus client: not for `oix --help`.
    from services.demo._stream import run_demo  # noqa: PLC0415  # fast --help

    settings = broker_settings_or_exit(bootstrap, required=True)
    servers = settings.bootstrap
    assert servers is not None  # required=True
    try:
        exchange = Exchange.from_settings(settings)
    except OixError as exc:
        raise fail(str(exc), EXIT_CONFIG) from None

    def show(p: Published) -> None:
        header = p.report.header
        out.print(
            f"{p.report.report_type:<22} {header.originator:<8} -> "
            f"{', '.join(p.topics)} [{p.partition}@{p.offset}]",
            highlight=False,
        )

    count = run(
        lambda: run_demo(
            settings,
            exchange,
            servers,
            rounds=rounds or None,
            interval=interval,
            on_published=show,
        ),
    )
    out.print(f"published {count} reports")
