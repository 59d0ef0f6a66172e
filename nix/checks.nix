# `nix flake check`: formatting, lints, the test suite with the real token tools, generated
# files that must not drift, and the end-to-end run on k3s in a NixOS VM with the images.
{ pkgs, built, images, root }:
let
  inherit (pkgs) lib;
  inherit (built) craneLib cargoArtifacts common workspace;

  # The suite's tests expect Debian's paths for the token tools; the VM links them. (Where
  # the ccid and vsmartcard-vpcd packages put their pcscd drivers is taken from their
  # package definitions and has not been evaluated here.)
  debianPaths = [
    "L+ /usr/lib/softhsm/libsofthsm2.so - - - - ${pkgs.softhsm}/lib/softhsm/libsofthsm2.so"
    "L+ /usr/lib/${pkgs.stdenv.hostPlatform.parsed.cpu.name}-linux-gnu/opensc-pkcs11.so - - - - ${pkgs.opensc}/lib/opensc-pkcs11.so"
    "L+ /usr/sbin/pcscd - - - - ${pkgs.pcsclite}/bin/pcscd"
    "L+ /usr/lib/pcsc/drivers - - - - ${pkgs.symlinkJoin { name = "pcsc-drivers"; paths = [ "${pkgs.ccid}/pcsc/drivers" "${pkgs.vsmartcard-vpcd}/pcsc/drivers" ]; }}"
    # Tests find the workspace's files where the build compiled them.
    "L+ /build/source - - - - ${built.src}"
  ];

  # The test binaries, built once, run in the VM below.
  testArchive = craneLib.mkCargoDerivation (common // {
    inherit cargoArtifacts;
    pname = "hsm-secrets-operator-test-archive";
    nativeBuildInputs = [ pkgs.cargo-nextest ];
    buildPhaseCargoCommand = "cargo nextest archive --locked --workspace --all-features --archive-file archive.tar.zst";
    installPhaseCommand = "install -Dm644 archive.tar.zst $out/archive.tar.zst";
    doCheck = false;
  });

  # The image tests assemble images from Debian's files; here the Nix images are what the
  # e2e check runs.
  nextestFilter = "not (binary(images) | binary(agent_image))";

  importImages = lib.concatMapStringsSep "\n"
    (drv: ''machine.succeed("zcat ${drv} | k3s ctr image import -")'')
    (lib.attrValues (lib.filterAttrs (name: _: name != "image") images));

  # k3s' pause container, built here (no registry is reachable from the VM).
  pause = pkgs.dockerTools.streamLayeredImage {
    name = "test.local/pause";
    tag = "local";
    contents = pkgs.buildEnv { name = "pause-env"; paths = [ pkgs.tini pkgs.busybox ]; };
    config.Entrypoint = [ "/bin/tini" "--" "/bin/sleep" "inf" ];
  };

  hasOperator = built.programs ? hsm-operator;
  hasE2e = builtins.pathExists (root + "/e2e");
in
{
  fmt = craneLib.cargoFmt { inherit (common) src pname version; };

  clippy = craneLib.cargoClippy (common // {
    inherit cargoArtifacts;
    cargoClippyExtraArgs = "--workspace --all-targets --all-features -- -D warnings";
  });

  # The generated CRDs match the types.
  crds = pkgs.runCommand "crds-drift" { } ''
    mkdir generated
    ${workspace}/bin/crdgen --out generated
    for f in generated/*.yaml; do
      diff -u ${root + "/deploy/crds"}/$(basename $f) $f
    done
    touch $out
  '';

  # Every overlay renders (its snapshot is compared by the suite).
  manifests = pkgs.runCommand "manifests-render" { nativeBuildInputs = [ pkgs.kubectl ]; } ''
    # The whole deploy/ directory: overlays refer to ../../base and ../../components.
    for overlay in ${root + "/deploy"}/overlays/*; do
      kubectl kustomize $overlay > /dev/null
    done
    touch $out
  '';

  tests = pkgs.testers.runNixOSTest {
    name = "hsm-secrets-operator-tests";
    nodes.machine = {
      virtualisation = { memorySize = 4096; cores = 2; diskSize = 8192; };
      environment.systemPackages = with pkgs; [ cargo-nextest cargo softhsm opensc pcsclite kubectl ];
      systemd.tmpfiles.rules = debianPaths;
    };
    testScript = ''
      machine.succeed(
        "cd /build/source && cargo-nextest nextest run --archive-file ${testArchive}/archive.tar.zst "
        + "--workspace-remap /build/source -E '${nextestFilter}' >&2"
      )
    '';
  };

  e2e = pkgs.testers.runNixOSTest {
    name = "hsm-secrets-operator-e2e";
    nodes.machine = {
      virtualisation = { memorySize = 4096; cores = 2; diskSize = 8192; };
      environment.systemPackages = [ pkgs.k3s pkgs.gzip ];
      services.k3s = {
        enable = true;
        role = "server";
        extraFlags = toString [
          "--disable coredns"
          "--disable local-storage"
          "--disable metrics-server"
          "--disable servicelb"
          "--disable traefik"
          "--pause-image test.local/pause:local"
        ];
      };
    };
    testScript = ''
      machine.wait_for_unit("k3s")
      machine.succeed("${pause} | k3s ctr image import -")
      ${importImages}
      machine.wait_until_succeeds("k3s kubectl get serviceaccount default")
      machine.succeed("k3s kubectl apply -k ${root + "/deploy"}/overlays/default")
    '' + lib.optionalString hasOperator ''
      machine.wait_until_succeeds(
        "k3s kubectl -n hsm-secrets-operator-system rollout status "
        + "deployment/hsm-secrets-operator-controller-manager --timeout=30s"
      )
    '' + lib.optionalString hasE2e ''
      machine.succeed(
        "cd /build/source && HSM_E2E_BACKEND=cluster KUBECONFIG=/etc/rancher/k3s/k3s.yaml "
        + "cargo-nextest nextest run --archive-file ${testArchive}/archive.tar.zst "
        + "--workspace-remap /build/source -E 'package(e2e)' >&2"
      )
    '';
  };
}
