# Scratch images of the three components, with the files the local images have
# (crates/delivery/src/components.rs is the table, and the file-list snapshots under
# crates/delivery/tests/snapshots are the shared truth): each program at the same path, the
# same configuration files, users and empty directories. Libraries come from the Nix store
# (their closure is what dockerTools copies) instead of /usr/lib.
#
#   nix build .#image                  all images, as docker-archive tarballs in result/
#   nix build .#image-hsm-agent        one image
# Names and tag are those `cargo xtask images` gives (localhost/<component>:dev), which
# deploy/ refers to; retag when pushing (skopeo copy docker-archive:… docker://REGISTRY/…).
{ pkgs, built, tag ? "dev" }:
let
  inherit (pkgs) lib;
  inherit (built) programs workspace;
  multiarch = "${pkgs.stdenv.hostPlatform.parsed.cpu.name}-linux-gnu";

  base = pkgs.runCommand "image-base" { } ''
    mkdir -p $out/etc/ssl/certs $out/tmp
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > $out/etc/passwd
    printf 'root:x:0:\nnonroot:x:65532:\n' > $out/etc/group
    ln -s ${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt $out/etc/ssl/certs/ca-certificates.crt
  '';

  # The CCID driver's Info.plist taught the Pico HSM (2e8a:10fd) by the same code that
  # patches it for the local images.
  ccidInfoPlist = pkgs.runCommand "ccid-info-plist" { } ''
    mkdir -p $out/etc $out/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents
    ${workspace}/bin/ccid-info-plist \
      < ${pkgs.ccid}/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist \
      > $out/etc/libccid_Info.plist
    ln -s /etc/libccid_Info.plist $out/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Info.plist
  '';

  binary = name: pkgs.runCommand "image-${name}-binary" { } ''
    mkdir -p $out/usr/bin
    ln -s ${programs.${name}}/bin/${name} $out/usr/bin/${name}
  '';

  agentFiles = pkgs.runCommand "image-hsm-agent-files" { } ''
    mkdir -p $out/usr/sbin $out/usr/bin $out/usr/lib/${multiarch}/pkcs11 $out/etc/opensc \
      $out/run/pcscd $out/var/lock/pcsc $out/etc/hsm/tls $out/var/lib/pcsc \
      $out/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Linux
    ln -s ${pkgs.pcsclite}/bin/pcscd $out/usr/sbin/pcscd
    ln -s ${pkgs.opensc}/bin/sc-hsm-tool $out/usr/bin/sc-hsm-tool
    ln -s ${pkgs.opensc}/lib/opensc-pkcs11.so $out/usr/lib/${multiarch}/opensc-pkcs11.so
    ln -s ../opensc-pkcs11.so $out/usr/lib/${multiarch}/pkcs11/opensc-pkcs11.so
    # nixpkgs' OpenSC reads /etc/opensc.conf, Debian's /etc/opensc/opensc.conf.
    ln -s ${pkgs.opensc}/etc/opensc.conf $out/etc/opensc/opensc.conf
    ln -s /etc/opensc/opensc.conf $out/etc/opensc.conf
    ln -s ${pkgs.ccid}/pcsc/drivers/ifd-ccid.bundle/Contents/Linux/libccid.so \
      $out/usr/lib/pcsc/drivers/ifd-ccid.bundle/Contents/Linux/libccid.so
    # nixpkgs' pcscd looks for drivers in /var/lib/pcsc/drivers.
    ln -s /usr/lib/pcsc/drivers $out/var/lib/pcsc/drivers
  '';

  image = { name, contents, user, env ? [ ] }: pkgs.dockerTools.buildLayeredImage {
    inherit tag;
    name = "localhost/${name}";
    contents = [ base (binary name) ] ++ contents;
    config = {
      Entrypoint = [ "/usr/bin/${name}" ];
      User = "${toString user}:${toString user}";
      Env = env;
      Labels."io.hsm-secrets-operator.component" = name;
    };
  };

  components = {
    hsm-operator = { user = 65532; contents = [ ]; };
    hsm-discovery = { user = 65532; contents = [ ccidInfoPlist ]; };
    hsm-agent = {
      user = 0;
      contents = [ agentFiles ccidInfoPlist ];
      env = [ "PKCS11_LIBRARY=/usr/lib/${multiarch}/opensc-pkcs11.so" ];
    };
  };

  # Only the components whose program the workspace has.
  present = lib.filterAttrs (name: _: programs ? ${name}) components;
  built' = lib.mapAttrs (name: c: image (c // { inherit name; })) present;
in
lib.mapAttrs' (name: drv: lib.nameValuePair "image-${name}" drv) built' // {
  # The set a GitOps pipeline pushes: one directory of docker-archive tarballs.
  image = pkgs.linkFarm "hsm-secrets-operator-images-${tag}"
    (lib.mapAttrsToList (name: drv: { name = "${name}.tar.gz"; path = drv; }) built');
}
