package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/sbuml/sbuml"
	"github.com/sbuml/sbuml/image"
	"github.com/sbuml/sbuml/objects"
	"github.com/spf13/cobra"
)

func imageCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "image",
		Short:   "Build, import, list, remove and export base images",
		Example: "  sbuml image build debian\n  sbuml image ls",
	}
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
		Example: `  sbuml image build
  sbuml image build debian --disk-size 4G --name big`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []cobra.Completion{sbuml.RecipeTiny, sbuml.RecipeDebian},
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.Result, error) {
			opts.Recipe = sbuml.RecipeTiny
			if len(args) == 1 {
				opts.Recipe = args[0]
			}
			if name == "" {
				name = opts.Recipe
			}
			opts.DiskSize = int64(disk)
			opts.Progress = progressWriter()
			return s.BuildImage(ctx, name, opts)
		}, func(res *sbuml.Result) {
			fmt.Printf("image %s: %s, %s\n", strings.TrimPrefix(res.Branch, "refs/images/"), res.ID, humanBytes(res.LogicalBytes))
		}),
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
		Example: `  sbuml image import alpine alpine.qcow2
  sbuml image import mine --kernel vmlinuz --initrd initrd.img --disk root.img`,
		Args: cobra.RangeArgs(1, 2),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (*sbuml.Result, error) {
			if len(args) == 2 {
				if src.Disk != "" {
					return nil, usagef("give the disk once: as an argument or with --disk")
				}
				src.Disk = args[1]
			}
			if src.Disk == "" {
				return nil, usagef("no disk: sbuml image import NAME DISK, or --kernel K --disk D")
			}
			bar := newStoreBar("storing")
			res, err := s.ImportImage(ctx, args[0], src, sbuml.ImportImageOptions{Progress: progressWriter(), OnProgress: bar.update})
			bar.done()
			return res, err
		}, func(res *sbuml.Result) {
			fmt.Printf("image %s: %s, %s, %s new\n", strings.TrimPrefix(res.Branch, "refs/images/"), res.ID, humanBytes(res.LogicalBytes), humanBytes(res.Stats.NewBytes))
		}),
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
		Use:     "ls",
		Short:   "List base images",
		Example: "  sbuml image ls\n  sbuml image ls --json",
		Args:    cobra.NoArgs,
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, _ []string) ([]sbuml.ImageInfo, error) {
			return s.Images(ctx)
		}, func(imgs []sbuml.ImageInfo) {
			for _, i := range imgs {
				fmt.Printf("%-12s %s %s %-6s %-22s %-13s %s\n", i.Name, i.ID.Short(), i.Time.Local().Format("2006-01-02 15:04"),
					i.Boot, orDash(i.KernelVersion), orDash(abilities(i)), humanBytes(i.LogicalBytes))
			}
		}),
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

func orDash(s string) string { return orDefault(s, "-") }

// removedImage is one image image rm removed.
type removedImage struct {
	Name string     `json:"name"`
	ID   objects.ID `json:"id"`
}

func imageRmCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove base images",
		Long: `Remove base images. Their data stays in the scrapbook until 'sbuml gc' removes
what nothing else needs; machines booted from them keep their own files.`,
		Example:           "  sbuml image rm old && sbuml gc",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeEach(completeImages),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) ([]removedImage, error) {
			var out []removedImage
			for _, name := range args {
				id, err := s.RemoveImage(ctx, name)
				if err != nil {
					return nil, err
				}
				out = append(out, removedImage{name, id})
			}
			return out, nil
		}, func(out []removedImage) {
			for _, r := range out {
				fmt.Printf("removed image %s (was %s); 'sbuml gc' frees its space\n", r.Name, r.ID.Short())
			}
		}),
	}
	addJSONFlag(c)
	return c
}

// exportedImage is what image export reports.
type exportedImage struct {
	Image string `json:"image"`
	File  string `json:"file"`
	Bytes int64  `json:"bytes"`
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
		Example:           "  sbuml image export tiny --raw tiny.img",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeArgs(completeImages),
		RunE: withScrapbook(func(ctx context.Context, s *sbuml.Scrapbook, args []string) (exportedImage, error) {
			if raw == "" {
				return exportedImage{}, usagef("no output file: sbuml image export NAME --raw FILE")
			}
			if err := s.ExportBootableDisk(ctx, args[0], raw); err != nil {
				return exportedImage{}, err
			}
			fi, err := os.Stat(raw)
			if err != nil {
				return exportedImage{}, err
			}
			return exportedImage{args[0], raw, fi.Size()}, nil
		}, func(r exportedImage) {
			fmt.Printf("image %s written to %s: %s, boots by BIOS\n", r.Image, r.File, humanBytes(r.Bytes))
		}),
	}
	c.Flags().StringVar(&raw, "raw", "", "the raw disk file to write")
	addJSONFlag(c)
	return c
}
