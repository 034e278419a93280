#!/usr/bin/env bash
# A tour of the fluxo command, on the app of cli_app.py and its SQLite file shop.db.
# Run it from the folder that holds cli_app.py: bash cli_tour.sh
set -euo pipefail
export FLUXO_APP=cli_app:engine           # your engine, as module:attribute
export FLUXO_STORE_URL=sqlite:///shop.db  # the store, for the commands that take a URL

fluxo db upgrade                          # SQL stores: create or migrate the schema
fluxo db check && fluxo db current

python cli_app.py start order-1 4200      # waits for the signal "approved"
python cli_app.py start order-2 0         # its charge step fails
python cli_app.py start order-3 990       # to be cancelled

fluxo worker --concurrency 2 & worker=$!  # SIGTERM stops it gracefully
fluxo runs signal order-1 approved true   # the payload is JSON
python cli_app.py wait order-1            # r-order-1
python cli_app.py wait order-2            # order-2 failed: ... cannot charge 0 cents
fluxo runs cancel order-3
python cli_app.py wait order-3            # order-3 cancelled

fluxo runs list                           # a table, newest first; --json for scripts
fluxo runs list --status failed --json
fluxo runs list --id-prefix order-1       # the runs whose id starts with order-1
fluxo runs show order-1                   # status, input, result, and the timed history
fluxo runs retry order-2                  # after fixing the cause: resumes from the history
fluxo runs history order-1 -o histories/order-1.json
fluxo replay histories                    # exits 1 if today's code no longer matches
fluxo runs purge --older-than 30d --dry-run  # finished runs 30 days old: none yet

kill -TERM "$worker" && wait "$worker"
