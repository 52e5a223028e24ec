"""Setup for smn_nb, driven by nbdev 2's settings.ini (written without pkg_resources, which
current setuptools no longer ships)."""
from configparser import ConfigParser
from pathlib import Path
import setuptools
from setuptools.command.build_py import build_py

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["1 - Planning", "2 - Pre-Alpha", "3 - Alpha", "4 - Beta", "5 - Production/Stable"]
lic = licenses[cfg["license"]]

# Files the package needs at run time, kept once in the repository (their single source) and copied into
# the built package's smn_nb/assets/ (found there by `smn_nb.backbones.shipped_file`). MANIFEST.in puts them
# in the sdist too, so a wheel built from the sdist has them.
ASSETS = ["data/resnet_fmnist.pt", "data/resnet_fmnist.json",                # the supervised offline backbone
          "data/resnet_fmnist_swav.pt", "data/resnet_fmnist_swav.json",     # the SwAV-pretrained one
          "data/paper_tables.csv", "nbs/run.ipynb"]

class build_py_assets(build_py):
    "build_py that also copies `ASSETS` into the built package's smn_nb/assets/ (not for editable installs: they use the checkout)."
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False): return
        dest = Path(self.build_lib) / cfg["lib_path"] / "assets"
        self.mkpath(str(dest))
        for f in ASSETS: self.copy_file(f, str(dest / Path(f).name))

setuptools.setup(
    cmdclass={"build_py": build_py_assets},
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    license=lic[0],
    classifiers=[
        "Development Status :: " + statuses[int(cfg["status"]) - 1],
        "Intended Audience :: " + cfg["audience"].title(),
        "License :: " + lic[1],
        "Natural Language :: " + cfg["language"].title(),
        "Programming Language :: Python :: 3",
    ],
    keywords=cfg["keywords"],
    packages=setuptools.find_packages(include=["smn_nb", "smn_nb.*"]),
    include_package_data=True,
    package_data={"smn_nb": ["assets/*"]},
    install_requires=cfg["requirements"].split(),
    extras_require={"dev": cfg["dev_requirements"].split()},
    python_requires=">=" + cfg["min_python"],
    zip_safe=False,
    entry_points={"console_scripts": cfg.get("console_scripts", "").split(),
                  "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
