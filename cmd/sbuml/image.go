package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/objects"
	"github.com/spf13/cobra"
)

func imageCmd() *cobra.Command {
	c := &cobra.Command{Use: "image", Short: "Build, import, list, remove and export base images"}
	c.AddCommand(imageBuildCmd(), imageImportCmd(), imageLsCmd(), imageRmCmd(), imageExportCmd())
	return c
}

func imageBuildCmd() *cobra.Command {
	var name string
	var opts sbuml.ImageOptions
	var disk sizeFlag
	c := &cobra.Command{
		Use:   "build [tiny|debian]",
		Short: "Build a guest image from Debian packages",
		Long: `Build a guest image and store it in the scrapbook as refs/images/NAME (NAME
is the recipe unless --name says otherwise):

  tiny    the default image: the linux-image-cloud-amd64 kernel, an initramfs
          holding busybox-static, and a small ext4 disk
  debian  Debian 12 installed with debootstrap: systemd, DHCP networking,
          ssh (root logs in with the scrapbook's key); needs root to build`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Recipe = sbuml.RecipeTiny
			if len(args) == 1 {
				opts.Recipe = args[0]
			}
			if name == "" {
				name = opts.Recipe
			}
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			opts.DiskSize = int64(disk)
			opts.Progress = progressWriter()
			res, err := s.BuildImage(ctx, name, opts)
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			fmt.Printf("image %s: %s, %s\n", name, res.ID, humanBytes(res.LogicalBytes))
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "image name (default: the recipe)")
	c.Flags().StringVar(&opts.KernelDeb, "kernel-deb", "", "tiny: use this linux-image .deb instead of downloading one")
	c.Flags().StringVar(&opts.BusyboxDeb, "busybox-deb", "", "tiny: use this busybox-static .deb instead of downloading one")
	c.Flags().StringVar(&opts.Mirror, "mirror", "", "debian: the Debian archive to install from (default: the host's)")
	c.Flags().Var(&disk, "disk-size", "root disk size (default 256M for tiny, 2G for debian)")
	addJSONFlag(c)
	return c
}

func imageImportCmd() *cobra.Command {
	var src sbuml.ImageSource
	c := &cobra.Command{
		Use:   "import NAME [DISK] [--kernel K [--initrd I] --disk D]",
		Short: "Store a system you bring as a base image",
		Long: `Store a system you bring as base image NAME (refs/images/NAME):

  sbuml image import NAME DISK.raw|DISK.qcow2
      a disk that boots by BIOS with its own boot loader (MBR);
  sbuml image import NAME --kernel K [--initrd I] --disk D [--cmdline C]
      a Linux kernel, its initramfs and its root disk.

A qcow2 disk is converted to raw with qemu-img; a raw disk is taken as it
is. --ready-marker names a line the guest prints on its serial console
when it is up; without one, a machine counts as ready once QEMU runs.
Importing the same files again stores almost nothing.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				if src.Disk != "" {
					return errors.New("give the disk once: as an argument or with --disk")
				}
				src.Disk = args[1]
			}
			if src.Disk == "" {
				return errors.New("no disk: sbuml image import NAME DISK, or --kernel K --disk D")
			}
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			progress, clear := storeProgress("storing")
			res, err := s.ImportImage(ctx, args[0], src, sbuml.ImportImageOptions{Progress: progressWriter(), OnProgress: progress})
			clear()
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(res)
			}
			fmt.Printf("image %s: %s, %s, %s new\n", args[0], res.ID, humanBytes(res.LogicalBytes), humanBytes(res.Stats.NewBytes))
			return nil
		},
	}
	c.Flags().StringVar(&src.Disk, "disk", "", "the root disk (raw or qcow2)")
	c.Flags().StringVar(&src.Kernel, "kernel", "", "a Linux kernel (bzImage) to boot instead of the disk's boot loader")
	c.Flags().StringVar(&src.Initrd, "initrd", "", "the kernel's initramfs")
	c.Flags().StringVar(&src.Cmdline, "cmdline", "", "the kernel command line (default \""+image.DefaultImportCmdline+"\")")
	c.Flags().StringVar(&src.ReadyMarker, "ready-marker", "", "a line the guest prints on its serial console when it is up")
	addJSONFlag(c)
	return c
}

func imageLsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ls",
		Short: "List base images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			imgs, err := s.Images(context.Background())
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(imgs)
			}
			for _, i := range imgs {
				fmt.Printf("%-12s %s %s %-6s %-22s %-13s %s\n", i.Name, i.ID.Short(), i.Time.Local().Format("2006-01-02 15:04"),
					i.Boot, orDash(i.KernelVersion), orDash(abilities(i)), humanBytes(i.LogicalBytes))
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

// abilities lists what an image can do, as "net,ssh,agent".
func abilities(i sbuml.ImageInfo) string {
	var a []string
	for _, f := range []struct {
		name string
		has  bool
	}{{"net", i.Net}, {"ssh", i.SSH}, {"agent", i.Agent}} {
		if f.has {
			a = append(a, f.name)
		}
	}
	return strings.Join(a, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func imageRmCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove base images",
		Long: `Remove base images. Their data stays in the scrapbook until 'sbuml gc' removes
what nothing else needs; machines booted from them keep their own files.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			type removed struct {
				Name string     `json:"name"`
				ID   objects.ID `json:"id"`
			}
			var out []removed
			for _, name := range args {
				id, err := s.RemoveImage(context.Background(), name)
				if err != nil {
					return err
				}
				out = append(out, removed{name, id})
				if !flagJSON {
					fmt.Printf("removed image %s (was %s); 'sbuml gc' frees its space\n", name, id.Short())
				}
			}
			if flagJSON {
				return printJSON(out)
			}
			return nil
		},
	}
	addJSONFlag(c)
	return c
}

func imageExportCmd() *cobra.Command {
	var raw string
	c := &cobra.Command{
		Use:   "export NAME --raw FILE",
		Short: "Write a base image as a disk that boots by BIOS",
		Long: `Write base image NAME to FILE as a raw disk that boots by BIOS with its own
boot loader (syslinux): partition 1 holds the kernel and initrd, partition 2
the root file system. Run it elsewhere (qemu-system-x86_64 -drive
file=FILE,format=raw,if=virtio), or import it again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if raw == "" {
				return errors.New("no output file: sbuml image export NAME --raw FILE")
			}
			s, err := openScrapbook()
			if err != nil {
				return err
			}
			ctx, cancel := interruptible()
			defer cancel()
			if err := s.ExportBootableDisk(ctx, args[0], raw); err != nil {
				return err
			}
			fi, err := os.Stat(raw)
			if err != nil {
				return err
			}
			if flagJSON {
				return printJSON(struct {
					Image string `json:"image"`
					File  string `json:"file"`
					Bytes int64  `json:"bytes"`
				}{args[0], raw, fi.Size()})
			}
			fmt.Printf("image %s written to %s: %s, boots by BIOS\n", args[0], raw, humanBytes(fi.Size()))
			return nil
		},
	}
	c.Flags().StringVar(&raw, "raw", "", "the raw disk file to write")
	addJSONFlag(c)
	return c
}
