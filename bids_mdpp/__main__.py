"""``python -m bids_mdpp`` runs the command line."""
from bids_mdpp.cli import main

if __name__ == "__main__":
    main()
