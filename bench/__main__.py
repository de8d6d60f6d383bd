"""`python -m bench`: drive a local wxbot the way WeCom does and print the figures."""

from bench.load import main

main()
