{
  description = "hsm-secrets-operator: a hardware security module as the source of truth for Kubernetes Secrets";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
  };

  outputs = { nixpkgs, crane, ... }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The workspace, built once, and one package per program.
      build = pkgs: import ./nix/packages.nix {
        inherit pkgs;
        craneLib = crane.mkLib pkgs;
        root = ./.;
      };
    in
    {
      packages = forAllSystems (pkgs:
        let
          built = build pkgs;
          images = import ./nix/images.nix { inherit pkgs built; };
        in
        built.programs // images // {
          inherit (built) workspace;
          default = built.workspace;
        });

      checks = forAllSystems (pkgs:
        let
          built = build pkgs;
        in
        import ./nix/checks.nix {
          inherit pkgs built;
          images = import ./nix/images.nix { inherit pkgs built; };
          root = ./.;
        });

      devShells = forAllSystems (pkgs: {
        default = import ./nix/shell.nix { inherit pkgs; };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
