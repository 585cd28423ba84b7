from freight.cli.main import main

main()
