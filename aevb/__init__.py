"""What the reproduction needs beside `vae_core` (models and training loops), one concern a module:

    paths       where things live (the repository, the data folder, published_numbers.csv)
    files       atomic writes that honour the umask (one implementation for every file we write)
    data        the published data files: checksums and loaders that only read
    released    Burda et al.'s released code where a protocol follows or measures it: their Adam
                (handed to vae_core.train as its optimizer) and their decoder's output bias
    estimators  log p(x): importance sampling with the encoder, and encoder-free after App. D
    runs        run folders: save, load, reuse or refuse, lock, checkpoints, and the hash of the
                code that trains
    grid        the experiment grid: protocols, budgets per profile, and every run (as data)
    experiment  one run end to end: RunConfig (every parameter, declared once, that checks itself),
                the device, Kingma's step-size choice, the training log, and train_run()
    scorecard   published numbers beside ours, looked up by name, and the verdicts (decided here
                once)
    findings    the notebooks' findings: sentences written once as templates, their numbers and the
                words that follow their signs filled in from the runs
    figures     figure and table files named after the papers', and image grids
    catalog     finished runs by name and profile, a run's test data, and the folders a notebook
                reads and writes
    latent      latent-space views of any trained model: manifold, codes by label, reconstructions,
                interpolations, samples from the prior
    explore     the widgets of notebooks/explore.ipynb
    progress    what `make paper` will cost before it starts, and its progress while it runs

Nothing here is imported by `import aevb`: each notebook and script imports what it uses.
"""
