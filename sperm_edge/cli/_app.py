"""The typer applications that every command module registers on."""

import typer

app = typer.Typer(
    name="sperm-edge",
    help="Sperm morphology classification: train, export, run on a microscope stream, explain, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Data utilities: synthetic microscope data sets, fields and videos.", no_args_is_help=True)
app.add_typer(data_app, name="data")
