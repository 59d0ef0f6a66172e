# The workspace, built once with crane (dependencies in their own cached derivation), and one
# package per program the project ships. Programs whose crate is not in the tree yet are left
# out, as `cargo xtask images` skips their images.
{ pkgs, craneLib, root }:
let
  inherit (pkgs) lib;
  version = (builtins.fromTOML (builtins.readFile (root + "/Cargo.toml"))).workspace.package.version;

  # Rust sources, the .proto files tonic compiles, and what the tests read (CRDs, deploy/,
  # insta snapshots, fixtures).
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions ([
      (craneLib.fileset.commonCargoSources root)
      (root + "/proto")
      (root + "/deploy")
      (lib.fileset.fileFilter (f: f.hasExt "snap" || f.hasExt "yaml" || f.hasExt "plist") (root + "/crates"))
    ] ++ lib.optional (builtins.pathExists (root + "/softhsm")) (root + "/softhsm"));
  };

  common = {
    inherit src version;
    pname = "hsm-secrets-operator";
    strictDeps = true;
  };

  cargoArtifacts = craneLib.buildDepsOnly common;

  workspace = craneLib.buildPackage (common // {
    inherit cargoArtifacts;
    cargoExtraArgs = "--locked --workspace --bins";
    # The suite runs in the checks, with the tools it needs.
    doCheck = false;
  });

  # Program name → the crate directory it comes from.
  shipped = {
    hsm-operator = "hsm-operator";
    hsm-agent = "hsm-agent";
    hsm-discovery = "hsm-discovery";
    kubectl-hsm = "kubectl-hsm";
    hsmctl = "hsmctl";
  };

  program = name: pkgs.runCommand "${name}-${version}" { meta.mainProgram = name; } ''
    install -Dm755 ${workspace}/bin/${name} $out/bin/${name}
  '';
in
{
  inherit workspace cargoArtifacts common craneLib src;
  programs = lib.mapAttrs (name: _: program name)
    (lib.filterAttrs (_: dir: builtins.pathExists (root + "/crates/${dir}")) shipped);
}
