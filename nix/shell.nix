# The development shell: the toolchain and the tools the tests and lints run.
{ pkgs }:
pkgs.mkShell {
  packages = with pkgs; [
    cargo
    rustc
    clippy
    rustfmt
    cargo-nextest
    pkg-config
    # Tokens and readers for the tests.
    softhsm
    opensc
    pcsclite
    ccid
    vsmartcard-vpcd
    # Images, manifests and the Nix lints.
    podman
    kubectl
    nixpkgs-fmt
    deadnix
    statix
  ];
}
