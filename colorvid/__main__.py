from colorvid.cli import main

main()
