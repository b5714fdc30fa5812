"""``python -m llmfactory`` runs the command line."""

from llmfactory.cli import main

if __name__ == "__main__":
    main()
