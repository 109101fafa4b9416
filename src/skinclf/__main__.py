from skinclf.cli import main

main()
