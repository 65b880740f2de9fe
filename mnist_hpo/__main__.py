from mnist_hpo.cli import main

main()
