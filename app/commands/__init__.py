"""CLI command groups. Each module defines `register(cli: typer.Typer) -> None`."""
