# Each model's headline quantities with CIs, and the text that reads them, from its tables.


rule findings:
    input:
        lambda wildcards: [t for s in STUDIES for t in study_tables(wildcards.model, s)],
    output:
        table=f"{RESULTS}/{{model}}/findings.parquet",
        markdown=report(
            f"{RESULTS}/{{model}}/findings.md",
            caption="../report/captions/findings.rst",
            category="Findings",
            subcategory="{model}",
            labels={"model": "{model}", "file": "findings.md"},
        ),
    log:
        f"{LOGS}/{{model}}/findings.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: findings_spec(),
        results=lambda wildcards: f"{RESULTS}/{wildcards.model}",
    shell:
        "python -m iclscope findings --results {params.results:q} --model {wildcards.model:q}"
        " --params {params.spec:q} --out-table {output.table:q}"
        " --out-markdown {output.markdown:q} > {log:q} 2>&1"


# With two or more models: their headline quantities side by side, and overlay figures.
rule compare:
    input:
        findings=[f"{RESULTS}/{m}/findings.parquet" for m in MODELS],
        cards=[f"{model_dir(m)}/card.json" for m in MODELS],
        curves=[t for m in MODELS for s in STUDIES for t in study_tables(m, s)],
    output:
        table=f"{RESULTS}/compare/headlines.parquet",
        markdown=report(
            f"{RESULTS}/compare/findings.md",
            caption="../report/captions/compare_findings.rst",
            category="Models compared",
            labels={"file": "findings.md"},
        ),
        figures=compare_figure_outputs(f"{RESULTS}/compare/figures"),
        captions=f"{RESULTS}/compare/figures/{CAPTIONS_FILE}",
    log:
        f"{LOGS}/compare.log",
    conda:
        "../envs/analysis.yaml"
    params:
        spec=lambda wildcards: findings_spec(),
        cards=named({m: f"{model_dir(m)}/card.json" for m in MODELS}),
        results=lambda wildcards, output: str(Path(output.table).parents[1]),
        out_dir=lambda wildcards, output: str(Path(output.table).parent),
        captions=lambda wildcards, output: Captions(output.captions),
    shell:
        "python -m iclscope compare --results {params.results:q} --cards {params.cards}"
        " --params {params.spec:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"
