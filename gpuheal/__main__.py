"""`python -m gpuheal` is the `gpuheal` command."""

from gpuheal.cli import main

if __name__ == "__main__":
    main()
