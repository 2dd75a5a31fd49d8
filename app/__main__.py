from sparcs.cli import main

main()
