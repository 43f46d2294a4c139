from sperm_edge.cli import main

main()
