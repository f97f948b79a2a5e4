from fidoctor.cli import main

main()
