"""`python -m rgbacli` runs the same CLI as the `rgba` script."""

from rgbacli.cli import main

main()
