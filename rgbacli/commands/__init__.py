"""CLI subcommands, one module each; each registers itself on rgbacli.cli.app."""
