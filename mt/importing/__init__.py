"""``mt-import``: the released NLLB-200 models (Hugging Face folders, fairseq checkpoints) as our checkpoints.

    mt-import --format hf nllb-200-distilled-600M/ --out models/nllb600m
    mt-import --format fairseq checkpoint.pt --langs langs.txt --out models/nllb600m
    mt-import --format hf nllb-moe-54b/ --dtype bfloat16 --out models/nllb-moe      # + one file per expert
    mt-import --format fairseq checkpoint_2_300000-shared.pt --dtype bfloat16 --out models/nllb-moe

writes ``checkpoint.pt`` + ``dict.txt`` + ``spm.model`` into ``--out``, so mt-generate, mt-translate,
mt-interactive and ``Translator`` load it like a model mt-train wrote. Modules:

- ``safe_pickle``: fairseq pickles without fairseq and without running code from the file;
- ``weights``: memory-mapped tensors read one at a time (safetensors, torch.load mmap);
- ``vocab``: the released vocabulary as dict.txt with fairseq's ids;
- ``hf`` / ``fairseq``: each format's config, names and checks -> ``convert.Imported``;
- ``convert``: the tensor plan (fused q/k/v), the conversion and the output folder;
- ``cli``: the command line.
"""
